//! The weekly health report (`copilot-edge report`), computed from a Prometheus server's HTTP
//! API: called by `main` with the parsed [`ReportArgs`]; it queries Prometheus, judges the
//! figures against their targets and writes Markdown or self-contained HTML.
//!
//! # Layout
//! - [`week`]: the reporting week (Monday 00:00 UTC to the next Monday) and date formatting.
//! - [`prom`]: the thin Prometheus API client over [`crate::httpc`] (the only I/O besides the
//!   output file).
//! - [`query`]: the PromQL of every figure and how the answers become a [`model::Report`].
//! - [`health`]: the GREEN / AMBER / RED rules.
//! - [`render`] and [`svg`]: Markdown, HTML and inline SVG charts; [`fmt`]: rounding.
//!
//! # Figures (each evaluated at the week's end over `[7d]`, see [`query`] for why)
//! - uptime: `avg_over_time(up{job="copilot-edge"}[7d])` averaged over gateways; else the share
//!   of minutes with a `push_time_seconds` under 5 minutes old; else the share of minutes in which
//!   `process_start_time_seconds` of the gateway was present;
//! - P95 latency of `copilot_latency_seconds{agent_name="rag_agent"}` from the week's bucket
//!   increases, against the 500 ms SLA;
//! - requests: increase of `copilot_requests_total` (every agent and status);
//! - error rate: 5xx share of `http_requests_total`, leaving out `/metrics` and probes;
//! - hallucination rate: `copilot_hallucination_total` / `copilot_answers_total` increases;
//! - average feedback: each series' week-mean `copilot_user_feedback_score`, weighted by its
//!   `copilot_user_feedback_total` increase (the gauge is a sliding-window mean, so this is the
//!   closest to "mean rating of the week" the exported series allow);
//! - tokens by direction and estimated cost (`copilot_llm_cost_usd_total`) against
//!   `--weekly-budget-usd`;
//! - per plant (requests, P95, hallucination rate, feedback), the top 10 equipment, the alerts
//!   that fired (with how long), the worst hour for latency, and requests and P95 per day.
//!
//! # Health rules
//! | figure | GREEN | AMBER (near miss) | RED (wide miss) |
//! |---|---|---|---|
//! | uptime | ≥ 99.5 % | ≥ 99.0 % | < 99.0 % |
//! | P95 latency (`rag_agent`) | ≤ 450 ms | ≤ 500 ms (SLA met, within 10 % of it) | > 500 ms (SLA missed) |
//! | error rate (5xx) | < 3 % | < 4.5 % | ≥ 4.5 % |
//! | hallucination rate | < 5 % | < 7.5 % | ≥ 7.5 % |
//! | average feedback | > 4.0 | > 3.5 | ≤ 3.5 |
//! | LLM cost | ≤ budget | ≤ 120 % of budget | > 120 % of budget |
//!
//! The overall health is the worst verdict. A figure without data (no scrape, no answers, no
//! ratings) is AMBER: its target cannot be confirmed. The cost has no verdict when the budget
//! is 0. When the report covers several plants, each plant's P95, hallucination rate and
//! feedback are judged by the same rules, but one plant alone raises the overall health to
//! AMBER at most (its reason names the plant). Requests and tokens are informational.
//!
//! # Failure behaviour
//! Every error is returned before any output is written: the report is rendered in memory, and
//! `--out` is written to a temporary file in the same directory, synced, then renamed over the
//! target, so a reader never sees a half-written report and a failed run leaves no file.
//! A week in which `copilot_requests_total` has no samples is an error ([`ReportError::NoData`]);
//! other empty figures are shown as "no data".

pub mod fmt;
pub mod health;
pub mod model;
pub mod prom;
pub mod query;
pub mod render;
pub mod svg;
pub mod week;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::{ReportArgs, ReportFormat};
use crate::httpc::HttpcError;

use self::week::{Date, Week};

/// Errors of the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `--week-of` is not a date.
    #[error("invalid --week-of {value:?}: {reason}")]
    InvalidWeek {
        /// What was given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The requested week has not ended yet, so its figures would be partial.
    #[error("the week of {monday} has not ended yet (it ends {ends}); pick an earlier --week-of")]
    WeekNotOver {
        /// The week's Monday.
        monday: String,
        /// When it ends (RFC 3339).
        ends: String,
    },
    /// `--weekly-budget-usd` is negative or not a number.
    #[error("invalid --weekly-budget-usd {0}: expected a number ≥ 0")]
    InvalidBudget(f64),
    /// `--plant` is empty.
    #[error("invalid --plant: the plant id must not be empty")]
    EmptyPlant,
    /// `--gaps-file` cannot be read.
    #[error("cannot read --gaps-file {}: {source}", path.display())]
    GapsFile {
        /// The file given.
        path: std::path::PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// `--prometheus` is not a usable URL.
    #[error("invalid --prometheus URL {url:?}: {reason}")]
    InvalidUrl {
        /// What was given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// Prometheus could not be reached (connect error, timeout, broken connection).
    #[error("cannot reach Prometheus at {url}: {source}")]
    Unreachable {
        /// The Prometheus base URL.
        url: String,
        /// The transport error.
        source: HttpcError,
    },
    /// Prometheus answered a query with an error.
    #[error(
        "Prometheus at {url} refused the query `{query}` (HTTP {status}, {error_type}): {message}"
    )]
    Query {
        /// The Prometheus base URL.
        url: String,
        /// The PromQL text.
        query: String,
        /// HTTP status of the answer.
        status: u16,
        /// Prometheus' `errorType` (`bad_data`, `execution`, `timeout`, ...).
        error_type: String,
        /// Prometheus' `error` message.
        message: String,
    },
    /// The answer was not what the Prometheus API returns (wrong URL, proxy error page, ...).
    #[error("unexpected answer from {url} to the query `{query}`: {reason}")]
    BadResponse {
        /// The Prometheus base URL.
        url: String,
        /// The PromQL text.
        query: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The week has no data for a metric the report cannot do without.
    #[error(
        "no data for the week of {week} ({from} to {to}): {metric} has no samples in that week{} at {url}",
        .plant.as_deref().map(|p| format!(" for plant_id={p:?}")).unwrap_or_default()
    )]
    NoData {
        /// The week's Monday.
        week: String,
        /// Week start (RFC 3339).
        from: String,
        /// Week end (RFC 3339).
        to: String,
        /// The metric that was empty.
        metric: String,
        /// `--plant`, if given.
        plant: Option<String>,
        /// The Prometheus base URL.
        url: String,
    },
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// Writing `--out` failed (nothing was left behind).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing to stdout failed.
    #[error("cannot write the report to stdout: {0}")]
    Stdout(std::io::Error),
}

/// The week to report: the one containing `--week-of`, else the last complete week at `now`.
/// A week that has not ended at `now` is refused.
pub fn resolve_week(week_of: Option<&str>, now: i64) -> Result<Week, ReportError> {
    let week = match week_of {
        None => return Ok(Week::last_complete(now)),
        Some(s) => Week::containing(Date::parse(s).map_err(|reason| ReportError::InvalidWeek {
            value: s.to_string(),
            reason,
        })?),
    };
    if week.end > now {
        return Err(ReportError::WeekNotOver {
            monday: week.monday().to_string(),
            ends: week::rfc3339(week.end),
        });
    }
    Ok(week)
}

/// Builds and writes the report.
pub fn run(args: &ReportArgs) -> Result<(), ReportError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let week = resolve_week(args.week_of.as_deref(), now)?;
    if !(args.weekly_budget_usd.is_finite() && args.weekly_budget_usd >= 0.0) {
        return Err(ReportError::InvalidBudget(args.weekly_budget_usd));
    }
    if args.plant.as_deref() == Some("") {
        return Err(ReportError::EmptyPlant);
    }
    let prom = prom::Prometheus::new(&args.prometheus)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ReportError::Runtime)?;
    let report = runtime.block_on(query::collect(
        &prom,
        week,
        args.plant.as_deref(),
        args.weekly_budget_usd,
    ))?;
    let mut report = report;
    if let Some(path) = &args.gaps_file {
        let log = std::fs::read(path).map_err(|source| ReportError::GapsFile {
            path: path.clone(),
            source,
        })?;
        query::attach_gap_examples(&mut report.gaps, &String::from_utf8_lossy(&log), &week);
        report.gap_examples_read = true;
    }
    let assessment = health::assess(&report);
    let text = match args.format {
        ReportFormat::Markdown => render::markdown(&report, &assessment),
        ReportFormat::Html => render::html(&report, &assessment),
    };
    match &args.out {
        Some(path) => write_atomic(path, text.as_bytes()),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(ReportError::Stdout)
        }
    }
}

/// Writes `bytes` to `path` atomically ([`crate::fsutil::write_atomic`], mode 0644: a report is
/// for sharing). On failure the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    crate::fsutil::write_atomic(path, bytes, 0o644).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(date: &str, secs: i64) -> i64 {
        Date::parse(date).unwrap().days() * week::DAY + secs
    }

    #[test]
    fn week_resolution() {
        let now = at("2026-11-26", 22 * 3600);
        let w = resolve_week(None, now).unwrap();
        assert_eq!(w.monday().to_string(), "2026-11-16");
        let w = resolve_week(Some("2026-11-12"), now).unwrap();
        assert_eq!(w.monday().to_string(), "2026-11-09");
        // The week of 2026-11-16 ended on Monday 2026-11-23 00:00.
        assert!(resolve_week(Some("2026-11-22"), now).is_ok());
        let e = resolve_week(Some("2026-11-23"), now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the week of 2026-11-23 has not ended yet (it ends 2026-11-30T00:00:00Z); pick an earlier --week-of"
        );
        let e = resolve_week(Some("2026-02-30"), now).unwrap_err();
        assert!(matches!(e, ReportError::InvalidWeek { .. }), "{e}");
        assert!(e.to_string().contains("2026-02-30"));
    }

    #[test]
    fn no_data_message_names_week_metric_and_plant() {
        let e = ReportError::NoData {
            week: "2026-10-05".into(),
            from: "2026-10-05T00:00:00Z".into(),
            to: "2026-10-12T00:00:00Z".into(),
            metric: "copilot_requests_total".into(),
            plant: Some("plant-9".into()),
            url: "http://p:9090".into(),
        };
        assert_eq!(
            e.to_string(),
            "no data for the week of 2026-10-05 (2026-10-05T00:00:00Z to 2026-10-12T00:00:00Z): copilot_requests_total has no samples in that week for plant_id=\"plant-9\" at http://p:9090"
        );
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ce-report-{tag}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let d = tmpdir("write");
        let p = d.join("r.md");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(names(&d), ["r.md"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failed_write_leaves_nothing_behind() {
        let d = tmpdir("fail");
        // The target is a non-empty directory: the rename fails after the temp file was written.
        let target = d.join("busy");
        std::fs::create_dir_all(target.join("x")).unwrap();
        let e = write_atomic(&target, b"data").unwrap_err();
        assert!(e.to_string().contains("busy"), "{e}");
        assert_eq!(names(&d), ["busy"]);
        // A missing directory: nothing is created.
        let e = write_atomic(&d.join("missing/r.md"), b"data").unwrap_err();
        assert!(matches!(e, ReportError::Write { .. }));
        assert_eq!(names(&d), ["busy"]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
