//! What the report asks Prometheus, and how the answers become a [`Report`].
//!
//! # Why `increase(x[7d])` evaluated at the week's end
//! Every weekly figure is one instant query at `time = week end` over a `[7d]` range: Prometheus
//! 2.x selects the samples in the closed interval `[start, end]`, so with samples at both edges
//! `increase` is exactly `last - first` (counter resets included) with no extrapolation. With
//! real scrapes (samples a few seconds inside the edges) `increase` extrapolates by at most one
//! scrape interval at each edge, under 0.01 % of a week. Summing 168 hourly increases instead
//! would extrapolate 168 times (and double-count the sample on each hour boundary in 2.x), so
//! it is both slower and less exact. Daily and hourly series use the same pattern:
//! `query_range` with `step` equal to the window (`[1d]` every day, `[1h]` every hour) and the
//! first point one window after the week starts, so the windows tile the week.
//!
//! # Scope
//! `--plant` adds `plant_id="…"` to every series that has the label. Series without it (`up`,
//! `push_time_seconds`, `http_requests_total`, alerts without `plant_id`) are restricted to the
//! plant's gateways: the `gateway_id`s whose `copilot_requests_total{plant_id="…"}` had samples in
//! the week (a gateway serves one plant).
//!
//! # Alerts
//! Fired alerts come from the raw samples of `ALERTS{alertstate="firing"}` in the week (an
//! instant query of `ALERTS{…}[7d]`), not from `query_range` of `ALERTS`: a range query keeps a
//! series visible for the 5-minute lookback after its last sample whenever there is no
//! staleness marker (backfilled or remote-written data), which would add up to 5 minutes to every
//! episode. Raw samples give the rule-evaluation timestamps themselves: consecutive samples
//! belong to one episode while the gap stays within 2.5 × the series' usual (median) spacing, so
//! one skipped rule evaluation does not split an episode, and an episode lasts from its first
//! sample to one spacing after its last (clipped to the week).

use std::collections::BTreeMap;

use super::model::*;
use super::prom::{Labels, Prometheus, Sample, Series};
use super::week::{Week, DAY};
use super::ReportError;

/// The latency histogram the SLA applies to.
pub const LATENCY: &str = "copilot_latency_seconds_bucket";
/// The agent whose latency the SLA covers.
pub const SLA_AGENT: &str = "rag_agent";
/// Handlers left out of the error rate (same as the recording rule
/// `gateway_id:http_requests_5xx:ratio_rate5m`): scrapes and probes are not API traffic.
pub const NON_API_HANDLERS: &str = "/metrics|/health.*|/ready.*|/live.*";
/// Pushgateway freshness limit, as in the `GatewayDown` rule.
pub const PUSH_FRESH_SECS: i64 = 300;
/// Top-N equipment.
pub const TOP_EQUIPMENT: usize = 10;
/// Rows of "Where SOPs are missing".
pub const TOP_GAPS: usize = 20;
/// Example questions per gap row.
pub const GAP_EXAMPLES: usize = 3;
/// Spacing assumed for an alert series with a single sample (Prometheus' default rule
/// evaluation interval).
pub const DEFAULT_ALERT_SPACING: i64 = 60;

/// A PromQL string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An RE2 pattern matching exactly `s`.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `metric{m1,m2,...}` from the matchers that are present.
pub fn selector(metric: &str, matchers: &[Option<&str>]) -> String {
    let m: Vec<&str> = matchers.iter().flatten().copied().collect();
    format!("{metric}{{{}}}", m.join(","))
}

/// The matchers of a scope.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// `plant_id="…"`, with `--plant`.
    pub plant: Option<String>,
    /// `gateway_id=~"a|b"`, with `--plant`.
    pub gateways: Option<String>,
}

impl Scope {
    fn p(&self) -> Option<&str> {
        self.plant.as_deref()
    }
    fn g(&self) -> Option<&str> {
        self.gateways.as_deref()
    }
}

/// The PromQL of every query, as functions of the scope (pure, so they can be read and tested
/// in one place).
pub mod promql {
    use super::*;

    /// Requests (`copilot_requests_total` increase over `window`), aggregated by `agg`.
    pub fn requests(s: &Scope, agg: &str, window: &str) -> String {
        format!(
            "{agg} (increase({}[{window}]))",
            selector("copilot_requests_total", &[s.p()])
        )
    }

    /// The gateways that served a plant during the week.
    pub fn gateways_of_plant(plant_matcher: &str) -> String {
        format!(
            "count by (gateway_id) (count_over_time({}[7d]))",
            selector("copilot_requests_total", &[Some(plant_matcher)])
        )
    }

    /// Scrape uptime: the week's mean of `up` per gateway.
    pub fn uptime_scrape(s: &Scope) -> String {
        format!(
            "avg_over_time({}[7d])",
            selector("up", &[Some("job=\"copilot-edge\""), s.g()])
        )
    }

    /// Share of 1-minute steps in which the last push was fresh.
    pub fn uptime_push(s: &Scope) -> String {
        format!(
            "sum_over_time((time() - {} < bool {PUSH_FRESH_SECS})[7d:1m]) / scalar(count_over_time(vector(1)[7d:1m]))",
            selector("push_time_seconds", &[Some("job=\"copilot-edge\""), s.g()])
        )
    }

    /// Share of 1-minute steps in which the gateway's own series were present.
    pub fn uptime_presence(s: &Scope) -> String {
        format!(
            "count_over_time(max by (gateway_id) ({})[7d:1m]) / scalar(count_over_time(vector(1)[7d:1m]))",
            selector("process_start_time_seconds", &[Some("gateway_id!=\"\""), s.g()])
        )
    }

    /// P95 of the SLA agent; `by` is extra grouping such as `plant_id, `.
    pub fn p95(s: &Scope, by: &str, window: &str) -> String {
        format!(
            "histogram_quantile(0.95, sum by ({by}le) (increase({}[{window}])))",
            selector(
                LATENCY,
                &[Some(&format!("agent_name={}", quote(SLA_AGENT))), s.p()]
            )
        )
    }

    /// API responses in the week (probes and scrapes left out); only 5xx when asked.
    pub fn http_requests(s: &Scope, only_5xx: bool) -> String {
        let handlers = format!("handler!~{}", quote(NON_API_HANDLERS));
        format!(
            "sum(increase({}[7d]))",
            selector(
                "http_requests_total",
                &[only_5xx.then_some("status=\"5xx\""), Some(&handlers), s.g()]
            )
        )
    }

    /// `metric`'s increase over the week, aggregated by `agg`.
    pub fn increase(metric: &str, s: &Scope, agg: &str) -> String {
        format!("{agg} (increase({}[7d]))", selector(metric, &[s.p()]))
    }

    /// Σ over series of (the week's mean score × the week's ratings).
    pub fn feedback_weighted(s: &Scope, agg: &str) -> String {
        format!(
            "{agg} (avg_over_time({}[7d]) * increase({}[7d]))",
            selector("copilot_user_feedback_score", &[s.p()]),
            selector("copilot_user_feedback_total", &[s.p()])
        )
    }

    /// LLM tokens by direction.
    pub fn tokens(s: &Scope) -> String {
        increase("copilot_llm_token_usage_total", s, "sum by (direction)")
    }

    /// Knowledge gaps by plant, equipment class and reason (only those with some).
    pub fn gaps(s: &Scope) -> String {
        format!(
            "sum by (plant_id, equipment_class, reason) (increase({}[7d])) > 0",
            selector("copilot_edge_knowledge_gaps_total", &[s.p()])
        )
    }

    /// The most requested equipment.
    pub fn equipment(s: &Scope) -> String {
        format!(
            "topk({TOP_EQUIPMENT}, sum by (plant_id, equipment_id) (increase({}[7d])))",
            selector("copilot_equipment_requests_total", &[s.p()])
        )
    }

    /// Raw samples of firing alerts: those of the plant, and (with a plant) those without a
    /// plant label raised by the plant's gateways.
    pub fn alerts(s: &Scope) -> Vec<String> {
        let firing = Some("alertstate=\"firing\"");
        match (s.p(), s.g()) {
            (Some(p), Some(g)) => vec![
                format!("{}[7d]", selector("ALERTS", &[firing, Some(p)])),
                format!(
                    "{}[7d]",
                    selector("ALERTS", &[firing, Some("plant_id=\"\""), Some(g)])
                ),
            ],
            _ => vec![format!("{}[7d]", selector("ALERTS", &[firing, s.p()]))],
        }
    }
}

/// The value of a one-element answer, if finite.
fn single(v: &[Sample]) -> Option<f64> {
    v.first().map(|s| s.value).filter(|v| v.is_finite())
}

/// Answer of a `sum by (plant_id)` query as plant → value (finite values only).
fn by_plant(v: &[Sample]) -> BTreeMap<String, f64> {
    v.iter()
        .filter(|s| s.value.is_finite())
        .map(|s| {
            (
                s.labels.get("plant_id").cloned().unwrap_or_default(),
                s.value,
            )
        })
        .collect()
}

fn mean(v: &[Sample]) -> Option<(f64, usize)> {
    let vals: Vec<f64> = v
        .iter()
        .map(|s| s.value)
        .filter(|v| v.is_finite())
        .collect();
    (!vals.is_empty()).then(|| (vals.iter().sum::<f64>() / vals.len() as f64, vals.len()))
}

/// Value of the point at time `t` of the first series.
fn point_at(series: &[Series], t: i64) -> Option<f64> {
    series
        .first()?
        .points
        .iter()
        .find(|(ts, _)| ts.round() as i64 == t)
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
}

/// Episodes and total firing time of one alert series from its raw sample timestamps,
/// counting only time inside `[week.start, week.end)`.
pub fn firing_time(timestamps: &[f64], week: Week) -> Option<(usize, i64, i64)> {
    let mut ts: Vec<i64> = timestamps
        .iter()
        .map(|t| (t * 1000.0).round() as i64)
        .filter(|t| *t >= week.start * 1000 && *t < week.end * 1000)
        .collect();
    ts.sort_unstable();
    ts.dedup();
    let first = *ts.first()?;
    let mut gaps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    let spacing = gaps
        .get(gaps.len() / 2)
        .copied()
        .unwrap_or(DEFAULT_ALERT_SPACING * 1000);
    let (mut episodes, mut total_ms) = (0usize, 0i64);
    let mut ep_start = first;
    let mut prev = first;
    for &t in ts.iter().skip(1).chain(std::iter::once(&i64::MAX)) {
        if t == i64::MAX || (t - prev) * 2 > spacing * 5 {
            episodes += 1;
            total_ms += (prev + spacing).min(week.end * 1000) - ep_start;
            ep_start = t;
        }
        prev = t;
    }
    Some((episodes, (total_ms + 500) / 1000, first / 1000))
}

/// Labels shown in their own columns, or never shown.
const ALERT_COLUMNS: &[&str] = &[
    "__name__",
    "alertname",
    "alertstate",
    "severity",
    "plant_id",
    "gateway_id",
    "team",
    "job",
    "instance",
];

/// Alert rows from raw `ALERTS` series, longest firing first.
pub fn alert_rows(series: &[Series], week: Week) -> Vec<AlertRow> {
    let label = |l: &Labels, k: &str| l.get(k).cloned().unwrap_or_default();
    let mut rows: Vec<AlertRow> = series
        .iter()
        .filter_map(|s| {
            let ts: Vec<f64> = s
                .points
                .iter()
                .filter(|(_, v)| *v != 0.0)
                .map(|(t, _)| *t)
                .collect();
            let (episodes, fired_secs, first) = firing_time(&ts, week)?;
            let details = s
                .labels
                .iter()
                .filter(|(k, _)| !ALERT_COLUMNS.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            Some(AlertRow {
                alertname: label(&s.labels, "alertname"),
                severity: label(&s.labels, "severity"),
                plant: label(&s.labels, "plant_id"),
                gateway: label(&s.labels, "gateway_id"),
                details,
                fired_secs,
                episodes,
                first,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        b.fired_secs
            .cmp(&a.fired_secs)
            .then_with(|| a.alertname.cmp(&b.alertname))
            .then_with(|| a.plant.cmp(&b.plant))
            .then_with(|| a.gateway.cmp(&b.gateway))
            .then_with(|| a.details.cmp(&b.details))
    });
    rows
}

/// The hour with the highest P95 (the earliest on a tie) from an hourly `query_range`, whose
/// point at `t` covers `[t - 1h, t]`, and how many hours were above `sla` seconds.
pub fn worst_hour(series: &[Series], sla: f64) -> Option<WorstHour> {
    let mut best: Option<(i64, f64)> = None;
    let (mut over, mut with_data) = (0, 0);
    for (t, v) in series.iter().flat_map(|s| s.points.iter()) {
        if !v.is_finite() {
            continue;
        }
        with_data += 1;
        over += usize::from(*v > sla);
        let start = t.round() as i64 - 3600;
        let better = match best {
            None => true,
            Some((bs, bv)) => *v > bv || (*v == bv && start < bs),
        };
        if better {
            best = Some((start, *v));
        }
    }
    best.map(|(start, p95_seconds)| WorstHour {
        start,
        p95_seconds,
        hours_over_sla: over,
        hours_with_data: with_data,
    })
}

/// Equipment rows from the `topk` answer, most requested first (ties by name, so the order is
/// stable).
pub fn equipment_rows(v: &[Sample]) -> Vec<EquipmentRow> {
    let mut rows: Vec<EquipmentRow> = v
        .iter()
        .filter(|s| s.value.is_finite())
        .map(|s| EquipmentRow {
            plant: s.labels.get("plant_id").cloned().unwrap_or_default(),
            equipment: s.labels.get("equipment_id").cloned().unwrap_or_default(),
            requests: s.value,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.requests
            .total_cmp(&a.requests)
            .then_with(|| a.plant.cmp(&b.plant))
            .then_with(|| a.equipment.cmp(&b.equipment))
    });
    rows.truncate(TOP_EQUIPMENT);
    rows
}

/// Gap rows, most frequent first (ties by plant, class, reason, so the order is stable).
pub fn gap_rows(v: &[Sample]) -> Vec<GapRow> {
    let label = |s: &Sample, k: &str| s.labels.get(k).cloned().unwrap_or_default();
    let mut rows: Vec<GapRow> = v
        .iter()
        .filter(|s| s.value.is_finite() && s.value > 0.0)
        .map(|s| GapRow {
            plant: label(s, "plant_id"),
            class: label(s, "equipment_class"),
            reason: label(s, "reason"),
            count: s.value,
            examples: Vec::new(),
        })
        .collect();
    rows.sort_by(|a, b| {
        b.count
            .total_cmp(&a.count)
            .then_with(|| (&a.plant, &a.class, &a.reason).cmp(&(&b.plant, &b.class, &b.reason)))
    });
    rows.truncate(TOP_GAPS);
    rows
}

/// Adds example questions to `rows` from the agent's JSON log lines (`knowledge_gap` events of
/// the week: its log files, `journalctl -o cat`, or the MQTT log stream a central subscriber
/// keeps): per row the last [`GAP_EXAMPLES`] distinct questions. Other lines are passed over.
pub fn attach_gap_examples(rows: &mut [GapRow], log: &str, week: &Week) {
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["event"] != "knowledge_gap" {
            continue;
        }
        let s = |k: &str| v[k].as_str().unwrap_or("");
        let day = s("timestamp")
            .get(..10)
            .and_then(|d| super::week::Date::parse(d).ok());
        if !day.is_some_and(|d| (week.start..week.end).contains(&(d.days() * DAY))) {
            continue;
        }
        let (q, plant, class, reason) = (
            s("question"),
            s("plant_id"),
            s("equipment_class"),
            s("reason"),
        );
        if q.is_empty() {
            continue;
        }
        if let Some(r) = rows
            .iter_mut()
            .find(|r| r.plant == plant && r.class == class && r.reason == reason)
        {
            r.examples.retain(|e| e != q);
            r.examples.push(q.to_string());
            if r.examples.len() > GAP_EXAMPLES {
                r.examples.remove(0);
            }
        }
    }
}

/// Asks Prometheus for every figure of the week and assembles the report.
pub async fn collect(
    prom: &Prometheus,
    week: Week,
    plant: Option<&str>,
    budget_usd: f64,
) -> Result<Report, ReportError> {
    let t = week.end;
    let mut scope = Scope {
        plant: plant.map(|p| format!("plant_id={}", quote(p))),
        gateways: None,
    };
    let no_data = |metric: &str| ReportError::NoData {
        week: week.monday().to_string(),
        from: super::week::rfc3339(week.start),
        to: super::week::rfc3339(week.end),
        metric: metric.to_string(),
        plant: plant.map(str::to_string),
        url: prom.url.clone(),
    };

    let requests = single(
        &prom
            .vector(&promql::requests(&scope, "sum", "7d"), t)
            .await?,
    )
    .ok_or_else(|| no_data("copilot_requests_total"))?;
    if let Some(pm) = &scope.plant {
        let gws: Vec<String> = prom
            .vector(&promql::gateways_of_plant(pm), t)
            .await?
            .iter()
            .filter_map(|s| s.labels.get("gateway_id").map(|g| regex_escape(g)))
            .collect();
        // An impossible pattern when the plant's series carry no gateway_id: nothing matches.
        let pattern = if gws.is_empty() {
            "$^".to_string()
        } else {
            gws.join("|")
        };
        scope.gateways = Some(format!("gateway_id=~{}", quote(&pattern)));
    }

    let mut uptime = None;
    for (source, q) in [
        (UptimeSource::Scrape, promql::uptime_scrape(&scope)),
        (UptimeSource::Push, promql::uptime_push(&scope)),
        (UptimeSource::Presence, promql::uptime_presence(&scope)),
    ] {
        if let Some((ratio, gateways)) = mean(&prom.vector(&q, t).await?) {
            uptime = Some(Uptime {
                ratio,
                source,
                gateways,
            });
            break;
        }
    }

    let p95_seconds = single(&prom.vector(&promql::p95(&scope, "", "7d"), t).await?);
    let errors = Ratio::new(
        single(&prom.vector(&promql::http_requests(&scope, true), t).await?),
        single(
            &prom
                .vector(&promql::http_requests(&scope, false), t)
                .await?,
        ),
    );

    // Per plant, then the scope's figure from the same answer (sum over plants).
    let halluc = by_plant(
        &prom
            .vector(
                &promql::increase("copilot_hallucination_total", &scope, "sum by (plant_id)"),
                t,
            )
            .await?,
    );
    let answers = by_plant(
        &prom
            .vector(
                &promql::increase("copilot_answers_total", &scope, "sum by (plant_id)"),
                t,
            )
            .await?,
    );
    let fb_sum = by_plant(
        &prom
            .vector(&promql::feedback_weighted(&scope, "sum by (plant_id)"), t)
            .await?,
    );
    let fb_n = by_plant(
        &prom
            .vector(
                &promql::increase("copilot_user_feedback_total", &scope, "sum by (plant_id)"),
                t,
            )
            .await?,
    );
    let req_by_plant = by_plant(
        &prom
            .vector(&promql::requests(&scope, "sum by (plant_id)", "7d"), t)
            .await?,
    );
    let p95_by_plant = by_plant(
        &prom
            .vector(&promql::p95(&scope, "plant_id, ", "7d"), t)
            .await?,
    );
    let total = |m: &BTreeMap<String, f64>| (!m.is_empty()).then(|| m.values().sum::<f64>());
    let hallucinations = Ratio::new(total(&halluc), total(&answers));
    let feedback = Feedback::new(total(&fb_sum), total(&fb_n));

    let plants: Vec<PlantRow> = req_by_plant
        .iter()
        .map(|(p, r)| PlantRow {
            plant: p.clone(),
            requests: *r,
            p95_seconds: p95_by_plant.get(p).copied(),
            hallucinations: Ratio::new(halluc.get(p).copied(), answers.get(p).copied()),
            feedback: Feedback::new(fb_sum.get(p).copied(), fb_n.get(p).copied()),
        })
        .collect();

    let mut tokens: Vec<(String, f64)> = prom
        .vector(&promql::tokens(&scope), t)
        .await?
        .into_iter()
        .filter(|s| s.value.is_finite())
        .map(|s| {
            (
                s.labels.get("direction").cloned().unwrap_or_default(),
                s.value,
            )
        })
        .collect();
    tokens.sort_by(|a, b| a.0.cmp(&b.0));
    let cost_usd = single(
        &prom
            .vector(
                &promql::increase("copilot_llm_cost_usd_total", &scope, "sum"),
                t,
            )
            .await?,
    );
    let equipment = equipment_rows(&prom.vector(&promql::equipment(&scope), t).await?);
    let gaps = gap_rows(&prom.vector(&promql::gaps(&scope), t).await?);

    let mut alert_series = Vec::new();
    for q in promql::alerts(&scope) {
        alert_series.extend(prom.raw(&q, t).await?);
    }
    let alerts = alert_rows(&alert_series, week);

    let hourly = prom
        .range(
            &promql::p95(&scope, "", "1h"),
            week.start + 3600,
            week.end,
            3600,
        )
        .await?;
    let worst_hour = worst_hour(&hourly, super::health::P95_SLA);
    let daily_requests = prom
        .range(
            &promql::requests(&scope, "sum", "1d"),
            week.start + DAY,
            week.end,
            DAY,
        )
        .await?;
    let daily_p95 = prom
        .range(
            &promql::p95(&scope, "", "1d"),
            week.start + DAY,
            week.end,
            DAY,
        )
        .await?;
    let days = week
        .day_starts()
        .map(|start| DayRow {
            start,
            requests: point_at(&daily_requests, start + DAY),
            p95_seconds: point_at(&daily_p95, start + DAY),
        })
        .collect();

    Ok(Report {
        week,
        plant: plant.map(str::to_string),
        source: prom.url.clone(),
        budget_usd,
        figures: Figures {
            uptime,
            p95_seconds,
            requests,
            errors,
            hallucinations,
            feedback,
            tokens,
            cost_usd,
        },
        plants,
        equipment,
        gaps,
        gap_examples_read: false,
        alerts,
        worst_hour,
        days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::week::Date;

    fn week() -> Week {
        Week::containing(Date::parse("2026-11-09").unwrap())
    }

    #[test]
    fn quoting_and_escaping() {
        assert_eq!(quote(r#"pl"ant\7"#), r#""pl\"ant\\7""#);
        assert_eq!(regex_escape("gw.1|x"), r"gw\.1\|x");
        assert_eq!(quote(&regex_escape("gw.1")), r#""gw\\.1""#);
        assert_eq!(
            selector("up", &[None, Some("a=\"b\""), None]),
            "up{a=\"b\"}"
        );
        assert_eq!(selector("up", &[]), "up{}");
    }

    #[test]
    fn queries_carry_the_scope() {
        let all = Scope::default();
        let one = Scope {
            plant: Some("plant_id=\"plant-7\"".into()),
            gateways: Some("gateway_id=~\"gw-1\"".into()),
        };
        assert_eq!(
            promql::requests(&all, "sum", "7d"),
            "sum (increase(copilot_requests_total{}[7d]))"
        );
        assert_eq!(
            promql::p95(&one, "plant_id, ", "1h"),
            "histogram_quantile(0.95, sum by (plant_id, le) (increase(copilot_latency_seconds_bucket{agent_name=\"rag_agent\",plant_id=\"plant-7\"}[1h])))"
        );
        assert_eq!(
            promql::http_requests(&one, true),
            "sum(increase(http_requests_total{status=\"5xx\",handler!~\"/metrics|/health.*|/ready.*|/live.*\",gateway_id=~\"gw-1\"}[7d]))"
        );
        assert_eq!(
            promql::uptime_scrape(&one),
            "avg_over_time(up{job=\"copilot-edge\",gateway_id=~\"gw-1\"}[7d])"
        );
        assert_eq!(
            promql::feedback_weighted(&all, "sum"),
            "sum (avg_over_time(copilot_user_feedback_score{}[7d]) * increase(copilot_user_feedback_total{}[7d]))"
        );
        assert_eq!(
            promql::alerts(&all),
            vec!["ALERTS{alertstate=\"firing\"}[7d]"]
        );
        assert_eq!(
            promql::alerts(&one),
            vec![
                "ALERTS{alertstate=\"firing\",plant_id=\"plant-7\"}[7d]",
                "ALERTS{alertstate=\"firing\",plant_id=\"\",gateway_id=~\"gw-1\"}[7d]"
            ]
        );
    }

    fn ts(start: i64, every: i64, n: i64) -> Vec<f64> {
        (0..n).map(|i| (start + i * every) as f64).collect()
    }

    #[test]
    fn firing_time_counts_episodes_inside_the_week() {
        let w = week();
        let h = 3600;
        let cases: Vec<(&str, Vec<f64>, Option<(usize, i64, i64)>)> = vec![
            ("none", vec![], None),
            (
                "one hour at 5m",
                ts(w.start + 50 * h + 600, 300, 12),
                Some((1, h, w.start + 50 * h + 600)),
            ),
            (
                "two episodes",
                [ts(w.start + h, 60, 30), ts(w.start + 5 * h, 60, 30)].concat(),
                Some((2, 3600, w.start + h)),
            ),
            (
                "starts before the week",
                ts(w.start - 1800, 300, 12),
                Some((1, 1800, w.start)),
            ),
            (
                "runs past the week",
                ts(w.end - 600, 300, 6),
                Some((1, 600, w.end - 600)),
            ),
            ("all outside", ts(w.end, 300, 6), None),
            (
                "single sample",
                vec![(w.start + h) as f64],
                Some((1, 60, w.start + h)),
            ),
            // A 15 s rule interval with jitter and one missed evaluation: still one episode.
            (
                "jitter",
                vec![0.0, 15.2, 29.9, 45.0, 75.1, 90.0]
                    .iter()
                    .map(|d| (w.start + h) as f64 + d)
                    .collect(),
                Some((1, 105, w.start + h)),
            ),
        ];
        for (name, samples, want) in cases {
            assert_eq!(firing_time(&samples, w), want, "{name}");
        }
    }

    #[test]
    fn alert_rows_are_sorted_and_labelled() {
        let w = week();
        let series = |name: &str, plant: &str, n: i64| Series {
            labels: [
                ("__name__", "ALERTS"),
                ("alertname", name),
                ("alertstate", "firing"),
                ("severity", "warning"),
                ("plant_id", plant),
                ("gateway_id", "gw-1"),
                ("agent_name", "rag_agent"),
            ]
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            points: ts(w.start + 3600, 300, n)
                .into_iter()
                .map(|t| (t, 1.0))
                .collect(),
        };
        let rows = alert_rows(
            &[series("B", "p", 2), series("A", "", 6), series("C", "p", 0)],
            w,
        );
        assert_eq!(
            rows.len(),
            2,
            "a series without samples in the week is not a row"
        );
        assert_eq!(
            (rows[0].alertname.as_str(), rows[0].fired_secs),
            ("A", 1800)
        );
        assert_eq!(rows[0].plant, "");
        assert_eq!(rows[0].details, "agent_name=rag_agent");
        assert_eq!((rows[1].alertname.as_str(), rows[1].fired_secs), ("B", 600));
    }

    #[test]
    fn worst_hour_takes_the_max_and_the_earliest_tie() {
        let w = week();
        let s = Series {
            labels: Labels::new(),
            points: vec![
                ((w.start + 3600) as f64, 0.3),
                ((w.start + 7200) as f64, f64::NAN),
                ((w.start + 10800) as f64, 2.275),
                ((w.start + 14400) as f64, 2.275),
            ],
        };
        assert_eq!(
            worst_hour(&[s], 0.5),
            Some(WorstHour {
                start: w.start + 7200,
                p95_seconds: 2.275,
                hours_over_sla: 2,
                hours_with_data: 3
            })
        );
        assert_eq!(worst_hour(&[], 0.5), None);
    }

    #[test]
    fn equipment_order_is_stable() {
        let s = |p: &str, e: &str, v: f64| Sample {
            labels: [("plant_id", p), ("equipment_id", e)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value: v,
        };
        let rows = equipment_rows(&[s("b", "x", 5.0), s("a", "y", 5.0), s("a", "z", 9.0)]);
        let got: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.plant.as_str(), r.equipment.as_str()))
            .collect();
        assert_eq!(got, [("a", "z"), ("a", "y"), ("b", "x")]);
    }

    #[test]
    fn gap_rows_rank_and_take_the_weeks_last_distinct_questions() {
        let s = |p: &str, c: &str, r: &str, v: f64| Sample {
            labels: [("plant_id", p), ("equipment_class", c), ("reason", r)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value: v,
        };
        let mut rows = gap_rows(&[
            s("p1", "pump", "low_rating", 2.0),
            s("p1", "generator", "no_sop_for_machine", 7.0),
            s("p2", "pump", "no_sop", 0.0),
        ]);
        assert_eq!(
            rows.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![7.0, 2.0]
        );
        let line = |day: &str, q: &str| {
            format!(
                r#"{{"timestamp":"{day}T10:00:00.000000Z","level":"info","event":"knowledge_gap","plant_id":"p1","equipment_class":"generator","reason":"no_sop_for_machine","question":"{q}"}}"#
            )
        };
        let log = [
            line("2026-11-08", "last week"),
            line("2026-11-09", "one"),
            "not json".to_string(),
            line("2026-11-10", "two"),
            line("2026-11-11", "one"),
            line("2026-11-12", "three"),
            line("2026-11-13", "four"),
            line("2026-11-16", "next week"),
        ]
        .join("\n");
        attach_gap_examples(&mut rows, &log, &week());
        assert_eq!(rows[0].examples, vec!["one", "three", "four"]);
        assert!(rows[1].examples.is_empty());
    }
}
