//! The report's figures as plain data: what `query` fills in from Prometheus, what `health`
//! judges and what the renderers print. Values are kept unrounded (rounding happens only when
//! rendering, see `fmt`), so the HTML's `data-value` attributes carry the exact figures.

use super::week::Week;

/// Everything the report shows, for one week and one scope (all plants, or `--plant`).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The reporting week.
    pub week: Week,
    /// `--plant`, when the report is restricted to one plant.
    pub plant: Option<String>,
    /// The Prometheus base URL the figures come from.
    pub source: String,
    /// `--weekly-budget-usd` (0 = no budget).
    pub budget_usd: f64,
    /// The headline figures.
    pub figures: Figures,
    /// One row per plant, ordered by plant id.
    pub plants: Vec<PlantRow>,
    /// At most 10, most requested first.
    pub equipment: Vec<EquipmentRow>,
    /// Where SOPs are missing, most frequent first.
    pub gaps: Vec<GapRow>,
    /// Whether example questions were looked for (`--gaps-file`).
    pub gap_examples_read: bool,
    /// Alerts that fired, longest first.
    pub alerts: Vec<AlertRow>,
    /// The hour with the highest P95 latency, if any hour had traffic.
    pub worst_hour: Option<WorstHour>,
    /// Exactly 7 rows, Monday first.
    pub days: Vec<DayRow>,
}

/// The headline figures of the scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Uptime, when any source had data.
    pub uptime: Option<Uptime>,
    /// P95 of `copilot_latency_seconds` for `rag_agent`, in seconds.
    pub p95_seconds: Option<f64>,
    /// `copilot_requests_total` increase (every agent and status).
    pub requests: f64,
    /// 5xx responses over all responses of the API handlers.
    pub errors: Option<Ratio>,
    /// Unsupported answers over answers.
    pub hallucinations: Option<Ratio>,
    /// Average rating, when there were ratings.
    pub feedback: Option<Feedback>,
    /// Tokens by `direction`, ordered by direction.
    pub tokens: Vec<(String, f64)>,
    /// Estimated LLM cost in USD.
    pub cost_usd: Option<f64>,
}

/// Where the uptime figure came from (the first source that has data wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UptimeSource {
    /// `up{job="copilot-edge"}` of the Prometheus scrape.
    Scrape,
    /// Pushgateway freshness: `push_time_seconds` younger than 5 minutes.
    Push,
    /// The agent's own series (`process_start_time_seconds`) were present, e.g. remote-written.
    Presence,
}

impl UptimeSource {
    /// How the figure was computed, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            UptimeSource::Scrape => "source: up",
            UptimeSource::Push => "source: push freshness",
            UptimeSource::Presence => "source: metrics present",
        }
    }
}

/// Share of the week each gateway was up, averaged over gateways.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Uptime {
    /// Share of the week up (0..1).
    pub ratio: f64,
    /// Which series it was computed from.
    pub source: UptimeSource,
    /// Number of series (gateways) averaged.
    pub gateways: usize,
}

/// `part` out of `whole` (whole > 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    /// The counted part (e.g. 5xx responses).
    pub part: f64,
    /// The whole it is a share of (e.g. all API responses).
    pub whole: f64,
}

impl Ratio {
    /// `part / whole`, or None when there is nothing to divide by.
    pub fn new(part: Option<f64>, whole: Option<f64>) -> Option<Ratio> {
        let whole = whole.filter(|w| w.is_finite() && *w > 0.0)?;
        Some(Ratio {
            part: part.filter(|p| p.is_finite()).unwrap_or(0.0),
            whole,
        })
    }

    /// `part / whole`.
    pub fn rate(&self) -> f64 {
        self.part / self.whole
    }
}

/// Average rating, weighted by the number of ratings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Feedback {
    /// Mean rating (1..5).
    pub average: f64,
    /// Number of ratings.
    pub ratings: f64,
}

impl Feedback {
    /// From Σ(score × ratings) and Σ ratings; None without ratings.
    pub fn new(weighted_sum: Option<f64>, ratings: Option<f64>) -> Option<Feedback> {
        let ratings = ratings.filter(|r| r.is_finite() && *r > 0.0)?;
        let sum = weighted_sum.filter(|s| s.is_finite())?;
        Some(Feedback {
            average: sum / ratings,
            ratings,
        })
    }
}

/// One plant's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantRow {
    /// Plant id.
    pub plant: String,
    /// Requests in the week.
    pub requests: f64,
    /// P95 latency in seconds, when there were samples.
    pub p95_seconds: Option<f64>,
    /// Answers citing no document, of all answers.
    pub hallucinations: Option<Ratio>,
    /// Average rating, when there were ratings.
    pub feedback: Option<Feedback>,
}

/// One of the most requested pieces of equipment.
#[derive(Debug, Clone, PartialEq)]
pub struct EquipmentRow {
    /// Plant id.
    pub plant: String,
    /// Equipment id.
    pub equipment: String,
    /// Requests in the week.
    pub requests: f64,
}

/// "Where SOPs are missing": the week's knowledge gaps (refusals and ratings of 1-2 stars) of
/// one plant, equipment class and reason, with a few of the questions when a log file was given.
#[derive(Debug, Clone, PartialEq)]
pub struct GapRow {
    /// Plant id.
    pub plant: String,
    /// Equipment class from the asset register (`unknown` when not listed).
    pub class: String,
    /// A refusal reason, or `low_rating`.
    pub reason: String,
    /// Gaps in the week.
    pub count: f64,
    /// Up to [`crate::report::query::GAP_EXAMPLES`] distinct questions, newest last.
    pub examples: Vec<String>,
}

/// One alert series that fired during the week.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    /// The alert's name.
    pub alertname: String,
    /// Its `severity` label.
    pub severity: String,
    /// Its `plant_id` label (empty when it has none).
    pub plant: String,
    /// Its `gateway_id` label (empty when it has none).
    pub gateway: String,
    /// Other identifying labels, `k=v` joined with commas.
    pub details: String,
    /// Total firing time within the week, in seconds.
    pub fired_secs: i64,
    /// Separate firing episodes.
    pub episodes: usize,
    /// When it first fired in the week.
    pub first: i64,
}

/// The hour with the highest P95.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorstHour {
    /// Start of the hour (Unix seconds).
    pub start: i64,
    /// P95 latency of that hour in seconds.
    pub p95_seconds: f64,
    /// Hours of the week whose P95 was above the SLA.
    pub hours_over_sla: usize,
    /// Hours of the week with latency samples.
    pub hours_with_data: usize,
}

/// One day of the week.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayRow {
    /// 00:00 UTC of the day.
    pub start: i64,
    /// Requests that day, when there was data.
    pub requests: Option<f64>,
    /// P95 latency that day in seconds, when there were samples.
    pub p95_seconds: Option<f64>,
}
