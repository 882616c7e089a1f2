//! Renders a [`Report`] and its [`Assessment`] as Markdown (chat, wikis) or as one
//! self-contained HTML page (inline CSS, inline SVG charts, no scripts and no external
//! resources). Pure: the same input always gives the same text.
//!
//! Both formats show the same sections in the same order: overall health and its reasons, the
//! headline figures with their targets, top issues (alerts, worst hour), per plant, top
//! equipment, per day, and how the figures are computed. In HTML, figure rows carry
//! `data-figure` and the unrounded `data-value`, so the page can be checked or scraped exactly.

use std::fmt::Write as _;

use super::fmt::{count, duration, escape_html, ms, pct, score, usd};
use super::health::{self, Assessment, Figure, Status};
use super::model::*;
use super::svg;
use super::week::{clock, datetime, Date, DAY};

/// Escapes text for a Markdown table cell (pipes, backslashes, line breaks, markup).
pub fn escape_md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '\\' | '*' | '_' | '`' | '[' | ']' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One row of the figures table, format-neutral.
struct FigureRow {
    /// Stable key (`data-figure`).
    key: String,
    name: String,
    /// The exact value (`data-value`), when there is one.
    value: Option<f64>,
    /// The value as shown, with context.
    shown: String,
    target: String,
    status: Option<Status>,
}

fn figure_rows(r: &Report, a: &Assessment) -> Vec<FigureRow> {
    let f = &r.figures;
    let na = || "no data".to_string();
    let mut rows = vec![
        FigureRow {
            key: "uptime".into(),
            name: "Uptime".into(),
            value: f.uptime.map(|u| u.ratio),
            shown: f.uptime.map_or_else(na, |u| {
                format!(
                    "{} ({} gateway{}; {})",
                    pct(u.ratio),
                    u.gateways,
                    if u.gateways == 1 { "" } else { "s" },
                    u.source.describe()
                )
            }),
            target: format!("≥ {}", health::pct_short(health::UPTIME_TARGET)),
            status: a.status(Figure::Uptime),
        },
        FigureRow {
            key: "p95_latency".into(),
            name: "P95 latency (rag_agent)".into(),
            value: f.p95_seconds,
            shown: f.p95_seconds.map_or_else(na, ms),
            target: format!("≤ {} (SLA)", health::sla()),
            status: a.status(Figure::P95),
        },
        FigureRow {
            key: "requests".into(),
            name: "Requests".into(),
            value: Some(f.requests),
            shown: count(f.requests),
            target: "—".into(),
            status: None,
        },
        FigureRow {
            key: "error_rate".into(),
            name: "Error rate (5xx)".into(),
            value: f.errors.map(|e| e.rate()),
            shown: f.errors.map_or_else(na, |e| {
                format!(
                    "{} ({} of {} API responses)",
                    pct(e.rate()),
                    count(e.part),
                    count(e.whole)
                )
            }),
            target: format!("< {}", health::pct_short(health::ERROR_TARGET)),
            status: a.status(Figure::Errors),
        },
        FigureRow {
            key: "hallucination_rate".into(),
            name: "Hallucination rate".into(),
            value: f.hallucinations.map(|h| h.rate()),
            shown: f.hallucinations.map_or_else(na, |h| {
                format!(
                    "{} ({} of {} answers)",
                    pct(h.rate()),
                    count(h.part),
                    count(h.whole)
                )
            }),
            target: format!("< {}", health::pct_short(health::HALLUCINATION_TARGET)),
            status: a.status(Figure::Hallucinations),
        },
        FigureRow {
            key: "feedback".into(),
            name: "Average feedback".into(),
            value: f.feedback.map(|x| x.average),
            shown: f.feedback.map_or_else(
                || "no ratings".to_string(),
                |x| format!("{} ({} ratings)", score(x.average), count(x.ratings)),
            ),
            target: format!("> {:.1}", health::FEEDBACK_TARGET),
            status: a.status(Figure::Feedback),
        },
    ];
    for (direction, n) in &f.tokens {
        rows.push(FigureRow {
            key: format!("tokens_{direction}"),
            name: format!("Tokens ({direction})"),
            value: Some(*n),
            shown: count(*n),
            target: "—".into(),
            status: None,
        });
    }
    if f.tokens.is_empty() {
        rows.push(FigureRow {
            key: "tokens".into(),
            name: "Tokens".into(),
            value: None,
            shown: na(),
            target: "—".into(),
            status: None,
        });
    }
    rows.push(FigureRow {
        key: "cost_usd".into(),
        name: "LLM cost (estimated)".into(),
        value: f.cost_usd,
        shown: f.cost_usd.map_or_else(na, usd),
        target: if r.budget_usd > 0.0 {
            format!("≤ {} (weekly budget)", usd(r.budget_usd))
        } else {
            "no budget set".into()
        },
        status: a.status(Figure::Cost),
    });
    rows
}

fn scope_text(r: &Report) -> String {
    match &r.plant {
        Some(p) => format!("plant {p}"),
        None => "all plants".to_string(),
    }
}

fn title(r: &Report) -> String {
    format!(
        "Copilot edge weekly health report: week of {}",
        r.week.monday()
    )
}

fn week_text(r: &Report) -> String {
    format!(
        "Mon {} 00:00 UTC to Mon {} 00:00 UTC",
        r.week.monday(),
        Date::from_days(r.week.end.div_euclid(DAY))
    )
}

fn day_label(start: i64) -> String {
    let d = Date::from_days(start.div_euclid(DAY));
    format!("{} {d}", d.weekday_name())
}

fn hour_text(w: &WorstHour) -> String {
    let d = Date::from_days(w.start.div_euclid(DAY));
    format!(
        "{} {d} {}–{} UTC",
        d.weekday_name(),
        clock(w.start),
        clock(w.start + 3600)
    )
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "—"
    } else {
        s
    }
}

/// The "how computed" notes, shared by both formats (Markdown inline code marks).
const METHOD: &[&str] = &[
    "Each weekly figure is one PromQL query evaluated at the week's end over `[7d]` (Monday 00:00 UTC to the next Monday).",
    "Uptime: `avg_over_time(up{job=\"copilot-edge\"}[7d])` averaged over gateways; without a scrape, the share of minutes with a fresh `push_time_seconds` (< 5 min old), else the share of minutes the gateway's own series were present.",
    "P95 latency: `histogram_quantile(0.95, …)` of the week's increase of `copilot_latency_seconds_bucket{agent_name=\"rag_agent\"}` (linear interpolation inside a bucket).",
    "Requests: increase of `copilot_requests_total`. Error rate: increase of `http_requests_total{status=\"5xx\"}` over all `http_requests_total`, leaving out `/metrics` and health probes.",
    "Hallucination rate: increase of `copilot_hallucination_total` over increase of `copilot_answers_total`.",
    "Average feedback: each series' mean `copilot_user_feedback_score` over the week, weighted by its `copilot_user_feedback_total` increase (the number of ratings).",
    "Tokens: increase of `copilot_llm_token_usage_total` by direction; cost: increase of `copilot_llm_cost_usd_total`.",
    "Alerts: raw samples of `ALERTS{alertstate=\"firing\"}` in the week; an episode lasts from its first sample to one evaluation interval after its last.",
    "Worst hour: P95 of each hour's histogram increase. With a plant filter, series without `plant_id` are limited to the plant's gateways.",
    "Rounding: percentages to 2 decimals, latency to 0.1 ms, counts to whole numbers, cost to the cent, ratings to 2 decimals, durations to the minute.",
    "Health: GREEN when every target is met; AMBER for a near miss or a figure without data; RED when uptime < 99.0%, P95 > 500 ms (SLA), error rate ≥ 4.5%, hallucination rate ≥ 7.5%, feedback ≤ 3.5 or cost > 120% of budget. P95 within 10% of the SLA is AMBER. One plant's miss raises the overall health to AMBER at most.",
];

/// Markdown.
pub fn markdown(r: &Report, a: &Assessment) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", title(r));
    let _ = writeln!(
        s,
        "Week: {} · Scope: {} · Source: `{}`\n",
        week_text(r),
        escape_md(&scope_text(r)),
        r.source.replace('`', "")
    );
    let _ = writeln!(s, "## Overall health: {}\n", a.overall);
    if a.reasons.is_empty() {
        let _ = writeln!(s, "Every figure met its target.\n");
    } else {
        for (status, reason) in &a.reasons {
            let _ = writeln!(s, "- **{status}** {}", escape_md(reason));
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Figures\n");
    let _ = writeln!(s, "| Figure | Value | Target | Status |");
    let _ = writeln!(s, "|---|---|---|---|");
    // Names, values and targets are the report's own text (no label values), so unescaped.
    for row in figure_rows(r, a) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            row.name,
            row.shown,
            row.target,
            row.status.map_or("—", Status::as_str)
        );
    }
    s.push('\n');

    let _ = writeln!(s, "## Top issues\n");
    let _ = writeln!(s, "### Alerts that fired\n");
    if r.alerts.is_empty() {
        let _ = writeln!(s, "No alert fired this week.\n");
    } else {
        let _ = writeln!(
            s,
            "| Alert | Severity | Plant | Gateway | Fired for | Episodes | First fired (UTC) | Details |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for al in &r.alerts {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                escape_md(&al.alertname),
                escape_md(or_dash(&al.severity)),
                escape_md(or_dash(&al.plant)),
                escape_md(or_dash(&al.gateway)),
                duration(al.fired_secs),
                al.episodes,
                datetime(al.first),
                escape_md(or_dash(&al.details))
            );
        }
        s.push('\n');
    }
    let _ = writeln!(s, "### Worst hour for latency\n");
    match &r.worst_hour {
        None => {
            let _ = writeln!(s, "No latency samples this week.\n");
        }
        Some(w) => {
            let _ = writeln!(
                s,
                "{}: P95 {} (SLA {}). Hours above the SLA: {} of {} with traffic.\n",
                hour_text(w),
                ms(w.p95_seconds),
                health::sla(),
                w.hours_over_sla,
                w.hours_with_data
            );
        }
    }

    let _ = writeln!(s, "## Per plant\n");
    let _ = writeln!(
        s,
        "| Plant | Requests | P95 latency | Hallucination rate | Average feedback |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for p in &r.plants {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            escape_md(&p.plant),
            count(p.requests),
            p.p95_seconds.map_or("no data".into(), ms),
            p.hallucinations.map_or("no data".into(), |h| pct(h.rate())),
            p.feedback.map_or("no ratings".into(), |f| score(f.average))
        );
    }
    s.push('\n');

    let _ = writeln!(s, "## Top equipment\n");
    if r.equipment.is_empty() {
        let _ = writeln!(s, "No equipment requests this week.\n");
    } else {
        let _ = writeln!(s, "| # | Plant | Equipment | Requests |");
        let _ = writeln!(s, "|---|---|---|---|");
        for (i, e) in r.equipment.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                i + 1,
                escape_md(&e.plant),
                escape_md(&e.equipment),
                count(e.requests)
            );
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Where SOPs are missing\n");
    let _ = writeln!(
        s,
        "Questions no SOP answered and answers rated 1–2 stars this week (`copilot_edge_knowledge_gaps_total`), by plant, equipment class and reason.\n"
    );
    if r.gaps.is_empty() {
        let _ = writeln!(s, "No refusals or low ratings this week.\n");
    } else {
        let _ = writeln!(
            s,
            "| # | Plant | Equipment class | Reason | Count | Example questions |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for (i, g) in r.gaps.iter().enumerate() {
            let examples = g
                .examples
                .iter()
                .map(|q| format!("“{}”", escape_md(q)))
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                i + 1,
                escape_md(&g.plant),
                escape_md(&g.class),
                escape_md(&g.reason),
                count(g.count),
                or_dash(&examples)
            );
        }
        if !r.gap_examples_read {
            let _ = writeln!(
                s,
                "\nExample questions: give the agents' log lines with `--gaps-file`."
            );
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Per day\n");
    let _ = writeln!(s, "| Day | Requests | P95 latency |");
    let _ = writeln!(s, "|---|---|---|");
    for d in &r.days {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            day_label(d.start),
            d.requests.map_or("no data".into(), count),
            d.p95_seconds.map_or("no data".into(), ms)
        );
    }
    s.push('\n');

    let _ = writeln!(s, "## How the figures are computed\n");
    for m in METHOD {
        let _ = writeln!(s, "- {m}");
    }
    s
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1f2328;line-height:1.45}\
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de}h3{font-size:1rem}\
table{border-collapse:collapse;margin:.5rem 0;width:100%}th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#f6f8fa}\
td.num{text-align:right;font-variant-numeric:tabular-nums}\
.status{display:inline-block;padding:0 .5rem;border-radius:.6rem;font-weight:600;font-size:.85rem}\
.green{background:#dafbe1;color:#116329}.amber{background:#fff1c2;color:#7d4e00}.red{background:#ffd8d3;color:#a40e26}\
.overall{font-size:1.1rem}.meta{color:#57606a}code{background:#f6f8fa;padding:0 .2rem}\
.chart{display:block;margin:.5rem 0;max-width:100%;height:auto}.chart .grid{stroke:#d0d7de;stroke-width:1}\
.chart .axis{font-size:11px;fill:#57606a}.chart .bar{fill:#4c8eda}.chart .line{fill:none;stroke:#4c8eda;stroke-width:2}\
.chart .sla{stroke:#cf222e;stroke-width:1;stroke-dasharray:4 3}.chart .dot{fill:#4c8eda}.chart .dot.over{fill:#cf222e}";

fn badge(s: Option<Status>) -> String {
    match s {
        None => "—".to_string(),
        Some(s) => format!(
            "<span class=\"status {}\">{}</span>",
            s.as_str().to_ascii_lowercase(),
            s
        ),
    }
}

/// Markdown-style `code` spans of the method notes → `<code>`, the rest escaped.
fn code_spans(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{}</code>", escape_html(part))
            } else {
                escape_html(part)
            }
        })
        .collect()
}

/// A self-contained HTML page.
pub fn html(r: &Report, a: &Assessment) -> String {
    let e = escape_html;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        e(&title(r))
    );
    let _ = writeln!(s, "<h1>{}</h1>", e(&title(r)));
    let _ = writeln!(
        s,
        "<p class=\"meta\">Week: {} · Scope: {} · Source: <code>{}</code></p>",
        e(&week_text(r)),
        e(&scope_text(r)),
        e(&r.source)
    );
    let _ = writeln!(
        s,
        "<h2>Overall health</h2>\n<p class=\"overall\" data-overall=\"{}\">{}</p>",
        a.overall,
        badge(Some(a.overall))
    );
    if a.reasons.is_empty() {
        let _ = writeln!(s, "<p>Every figure met its target.</p>");
    } else {
        let _ = writeln!(s, "<ul class=\"reasons\">");
        for (status, reason) in &a.reasons {
            let _ = writeln!(s, "<li>{} {}</li>", badge(Some(*status)), e(reason));
        }
        let _ = writeln!(s, "</ul>");
    }

    let _ = writeln!(s, "<h2>Figures</h2>\n<table class=\"figures\">\n<thead><tr><th>Figure</th><th>Value</th><th>Target</th><th>Status</th></tr></thead>\n<tbody>");
    for row in figure_rows(r, a) {
        let value = row
            .value
            .map_or(String::new(), |v| format!(" data-value=\"{v}\""));
        let _ = writeln!(
            s,
            "<tr data-figure=\"{}\"{value}><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&row.key),
            e(&row.name),
            e(&row.shown),
            e(&row.target),
            badge(row.status)
        );
    }
    let _ = writeln!(s, "</tbody>\n</table>");

    let labels: Vec<String> = r
        .days
        .iter()
        .map(|d| {
            Date::from_days(d.start.div_euclid(DAY))
                .weekday_name()
                .to_string()
        })
        .collect();
    let requests: Vec<Option<f64>> = r.days.iter().map(|d| d.requests).collect();
    let p95: Vec<Option<f64>> = r.days.iter().map(|d| d.p95_seconds).collect();
    let _ = writeln!(s, "<h2>Per day</h2>");
    let _ = writeln!(
        s,
        "{}",
        svg::bar_chart("Requests per day", &labels, &requests, &count)
    );
    let _ = writeln!(
        s,
        "{}",
        svg::line_chart(
            "P95 latency per day",
            &labels,
            &p95,
            health::P95_SLA,
            &|v| format!("{:.0} ms", v * 1000.0)
        )
    );
    let _ = writeln!(s, "<table class=\"days\">\n<thead><tr><th>Day</th><th>Requests</th><th>P95 latency</th></tr></thead>\n<tbody>");
    for d in &r.days {
        let _ = writeln!(
            s,
            "<tr data-day=\"{}\"><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            Date::from_days(d.start.div_euclid(DAY)),
            e(&day_label(d.start)),
            d.requests.map_or("no data".into(), count),
            d.p95_seconds.map_or("no data".into(), ms)
        );
    }
    let _ = writeln!(s, "</tbody>\n</table>");

    let _ = writeln!(s, "<h2>Top issues</h2>\n<h3>Alerts that fired</h3>");
    if r.alerts.is_empty() {
        let _ = writeln!(s, "<p>No alert fired this week.</p>");
    } else {
        let _ = writeln!(s, "<table class=\"alerts\">\n<thead><tr><th>Alert</th><th>Severity</th><th>Plant</th><th>Gateway</th><th>Fired for</th><th>Episodes</th><th>First fired (UTC)</th><th>Details</th></tr></thead>\n<tbody>");
        for al in &r.alerts {
            let _ = writeln!(
                s,
                "<tr data-alert=\"{}\" data-fired-seconds=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                e(&al.alertname),
                al.fired_secs,
                e(&al.alertname),
                e(or_dash(&al.severity)),
                e(or_dash(&al.plant)),
                e(or_dash(&al.gateway)),
                duration(al.fired_secs),
                al.episodes,
                datetime(al.first),
                e(or_dash(&al.details))
            );
        }
        let _ = writeln!(s, "</tbody>\n</table>");
    }
    let _ = writeln!(s, "<h3>Worst hour for latency</h3>");
    match &r.worst_hour {
        None => {
            let _ = writeln!(s, "<p>No latency samples this week.</p>");
        }
        Some(w) => {
            let _ = writeln!(
                s,
                "<p data-worst-hour=\"{}\" data-value=\"{}\"><strong>{}</strong>: P95 {} (SLA {}). Hours above the SLA: {} of {} with traffic.</p>",
                w.start,
                w.p95_seconds,
                e(&hour_text(w)),
                ms(w.p95_seconds),
                health::sla(),
                w.hours_over_sla,
                w.hours_with_data
            );
        }
    }

    let _ = writeln!(s, "<h2>Per plant</h2>\n<table class=\"plants\">\n<thead><tr><th>Plant</th><th>Requests</th><th>P95 latency</th><th>Hallucination rate</th><th>Average feedback</th></tr></thead>\n<tbody>");
    for p in &r.plants {
        let st_p95 = p.p95_seconds.map(health::p95);
        let st_h = p
            .hallucinations
            .map(|h| health::hallucination_rate(h.rate()));
        let st_f = p.feedback.map(|f| health::feedback(f.average));
        let cell = |text: String, st: Option<Status>| match st {
            Some(st) => format!("{} {}", e(&text), badge(Some(st))),
            None => e(&text),
        };
        let _ = writeln!(
            s,
            "<tr data-plant=\"{}\"><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&p.plant),
            e(&p.plant),
            count(p.requests),
            cell(p.p95_seconds.map_or("no data".into(), ms), st_p95),
            cell(p.hallucinations.map_or("no data".into(), |h| pct(h.rate())), st_h),
            cell(p.feedback.map_or("no ratings".into(), |f| score(f.average)), st_f)
        );
    }
    let _ = writeln!(s, "</tbody>\n</table>");

    let _ = writeln!(s, "<h2>Top equipment</h2>");
    if r.equipment.is_empty() {
        let _ = writeln!(s, "<p>No equipment requests this week.</p>");
    } else {
        let _ = writeln!(s, "<table class=\"equipment\">\n<thead><tr><th>#</th><th>Plant</th><th>Equipment</th><th>Requests</th></tr></thead>\n<tbody>");
        for (i, eq) in r.equipment.iter().enumerate() {
            let _ = writeln!(
                s,
                "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                i + 1,
                e(&eq.plant),
                e(&eq.equipment),
                count(eq.requests)
            );
        }
        let _ = writeln!(s, "</tbody>\n</table>");
    }

    let _ = writeln!(s, "<h2>Where SOPs are missing</h2>");
    let _ = writeln!(s, "<p>Questions no SOP answered and answers rated 1–2 stars this week, by plant, equipment class and reason.</p>");
    if r.gaps.is_empty() {
        let _ = writeln!(s, "<p>No refusals or low ratings this week.</p>");
    } else {
        let _ = writeln!(s, "<table class=\"gaps\">\n<thead><tr><th>#</th><th>Plant</th><th>Equipment class</th><th>Reason</th><th>Count</th><th>Example questions</th></tr></thead>\n<tbody>");
        for (i, g) in r.gaps.iter().enumerate() {
            let examples = g
                .examples
                .iter()
                .map(|q| format!("<q>{}</q>", e(q)))
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = writeln!(
                s,
                "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                i + 1,
                e(&g.plant),
                e(&g.class),
                e(&g.reason),
                count(g.count),
                if examples.is_empty() { "–".to_string() } else { examples }
            );
        }
        let _ = writeln!(s, "</tbody>\n</table>");
    }

    let _ = writeln!(
        s,
        "<h2>How the figures are computed</h2>\n<ul class=\"method\">"
    );
    for m in METHOD {
        let _ = writeln!(s, "<li>{}</li>", code_spans(m));
    }
    let _ = writeln!(s, "</ul>\n</body>\n</html>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::health::assess;
    use crate::report::week::Week;

    fn report() -> Report {
        let week = Week::containing(Date::parse("2026-11-09").unwrap());
        Report {
            week,
            plant: None,
            source: "http://127.0.0.1:9090".into(),
            budget_usd: 50.0,
            figures: Figures {
                uptime: Some(Uptime {
                    ratio: 0.991076,
                    source: UptimeSource::Scrape,
                    gateways: 2,
                }),
                p95_seconds: Some(0.33054),
                requests: 69120.0,
                errors: Ratio::new(Some(1728.0), Some(69120.0)),
                hallucinations: Ratio::new(Some(2016.0), Some(60480.0)),
                feedback: Feedback::new(Some(4.3 * 3024.0), Some(3024.0)),
                tokens: vec![("input".into(), 3_225_600.0), ("output".into(), 645_120.0)],
                cost_usd: Some(47.25),
            },
            plants: vec![PlantRow {
                plant: "plant-<7>|x".into(),
                requests: 43488.0,
                p95_seconds: Some(0.3557),
                hallucinations: Ratio::new(Some(1.0), Some(20.0)),
                feedback: None,
            }],
            equipment: vec![EquipmentRow {
                plant: "plant-7".into(),
                equipment: "press_07".into(),
                requests: 14112.0,
            }],
            gaps: vec![GapRow {
                plant: "plant-7".into(),
                class: "diesel generator".into(),
                reason: "no_sop_for_machine".into(),
                count: 12.0,
                examples: vec!["generator won't start <b>|</b> on test".into()],
            }],
            gap_examples_read: true,
            alerts: vec![AlertRow {
                alertname: "HighRequestLatency".into(),
                severity: "warning".into(),
                plant: "plant-7".into(),
                gateway: "gw-1".into(),
                details: String::new(),
                fired_secs: 3600,
                episodes: 1,
                first: week.start + 2 * DAY + 14 * 3600 + 600,
            }],
            worst_hour: Some(WorstHour {
                start: week.start + 2 * DAY + 14 * 3600,
                p95_seconds: 2.275,
                hours_over_sla: 1,
                hours_with_data: 168,
            }),
            days: week
                .day_starts()
                .map(|start| DayRow {
                    start,
                    requests: Some(11520.0),
                    p95_seconds: (start != week.start).then_some(0.33),
                })
                .collect(),
        }
    }

    #[test]
    fn markdown_has_every_section_and_figure() {
        let r = report();
        let md = markdown(&r, &assess(&r));
        for want in [
            "# Copilot edge weekly health report: week of 2026-11-09",
            "Week: Mon 2026-11-09 00:00 UTC to Mon 2026-11-16 00:00 UTC · Scope: all plants",
            "## Overall health: AMBER",
            "- **AMBER** Uptime 99.11% is below the 99.5% target",
            "| Uptime | 99.11% (2 gateways; source: up) | ≥ 99.5% | AMBER |",
            "| P95 latency (rag_agent) | 330.5 ms | ≤ 500 ms (SLA) | GREEN |",
            "| Requests | 69,120 | — | — |",
            "| Error rate (5xx) | 2.50% (1,728 of 69,120 API responses) | < 3% | GREEN |",
            "| Hallucination rate | 3.33% (2,016 of 60,480 answers) | < 5% | GREEN |",
            "| Average feedback | 4.30 (3,024 ratings) | > 4.0 | GREEN |",
            "| Tokens (input) | 3,225,600 | — | — |",
            "| LLM cost (estimated) | $47.25 | ≤ $50.00 (weekly budget) | GREEN |",
            "| HighRequestLatency | warning | plant-7 | gw-1 | 1h | 1 | 2026-11-11 14:10 | — |",
            "Wed 2026-11-11 14:00–15:00 UTC: P95 2275.0 ms (SLA 500 ms). Hours above the SLA: 1 of 168 with traffic.",
            "| plant-\\<7\\>\\|x | 43,488 | 355.7 ms | 5.00% | no ratings |",
            "| 1 | plant-7 | press\\_07 | 14,112 |",
            "## Where SOPs are missing",
            "| 1 | plant-7 | diesel generator | no\\_sop\\_for\\_machine | 12 | “generator won't start \\<b\\>\\|\\</b\\> on test” |",
            "| Mon 2026-11-09 | 11,520 | no data |",
            "| Tue 2026-11-10 | 11,520 | 330.0 ms |",
            "## How the figures are computed",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
    }

    #[test]
    fn markdown_without_data() {
        let mut r = report();
        r.alerts.clear();
        r.worst_hour = None;
        r.equipment.clear();
        r.gaps.clear();
        r.figures.feedback = None;
        r.figures.tokens.clear();
        r.budget_usd = 0.0;
        let md = markdown(&r, &assess(&r));
        for want in [
            "No alert fired this week.",
            "No latency samples this week.",
            "No equipment requests this week.",
            "No refusals or low ratings this week.",
            "| Average feedback | no ratings | > 4.0 | AMBER |",
            "| Tokens | no data | — | — |",
            "| LLM cost (estimated) | $47.25 | no budget set | — |",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let r = report();
        let h = html(&r, &assess(&r));
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(h.trim_end().ends_with("</html>"));
        assert_eq!(h.matches("<svg").count(), 2);
        assert!(h.contains("<tr data-figure=\"uptime\" data-value=\"0.991076\">"));
        assert!(h.contains("data-overall=\"AMBER\""));
        assert!(h.contains("plant-&lt;7&gt;|x"));
        assert!(!h.contains("plant-<7>"));
        assert!(
            h.contains("<q>generator won&#39;t start &lt;b&gt;|&lt;/b&gt; on test</q>"),
            "{h}"
        );
        for bad in ["src=", "href=", "url(", "@import", "<script", "<link"] {
            assert!(!h.contains(bad), "{bad}");
        }
        // The only URL is the source, shown as text.
        assert_eq!(h.matches("http://").count(), 1);
    }

    #[test]
    fn html_and_markdown_text_is_escaped() {
        assert_eq!(
            escape_html(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(escape_md("a|b_c\nd"), "a\\|b\\_c d");
        assert_eq!(code_spans("x `a<b` y"), "x <code>a&lt;b</code> y");
    }
}
