//! Pushgateway sink: `PUT /metrics/job/<job>/gateway_id/<gateway_id>/site/<site_plant_id>` with
//! the current metrics every snapshot interval.
//!
//! The grouping key names the site `site`, not `plant_id`: the Pushgateway overwrites a pushed
//! label that has the same name as a grouping label, which would erase the per-request
//! `plant_id` of every copilot series. Delivery means an HTTP 2xx. While the gateway is down the
//! sink retries with capped exponential backoff (never slower than the snapshot interval); the
//! first successful push after an outage carries the newest, cumulative values, and the
//! Pushgateway stamps `push_time_seconds` for the group.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Backoff, SinkError};
use crate::config::PushgatewaySinkConfig;
use crate::httpc;
use crate::metrics::Metrics;

/// Sink name, the `sink` label value.
pub const NAME: &str = "pushgateway";

/// The Pushgateway sink.
pub struct PushgatewaySink {
    cfg: PushgatewaySinkConfig,
    path: String,
    metrics: Arc<Metrics>,
    interval: Duration,
    state_dir: std::path::PathBuf,
}

impl PushgatewaySink {
    /// A sink pushing `metrics` for this gateway every `interval`.
    pub fn new(
        cfg: PushgatewaySinkConfig,
        gateway_id: &str,
        site_plant_id: &str,
        metrics: Arc<Metrics>,
        interval: Duration,
        state_dir: &std::path::Path,
    ) -> Self {
        let path = format!(
            "{}/metrics/job/{}/gateway_id/{gateway_id}/site/{site_plant_id}",
            cfg.base_path, cfg.job
        );
        metrics.sink.up.with_label_values(&[NAME]).set(0);
        PushgatewaySink {
            cfg,
            path,
            metrics,
            interval,
            state_dir: state_dir.to_path_buf(),
        }
    }

    async fn push(&self) -> Result<(), SinkError> {
        let mut req = hyper::Request::put(&self.path)
            .header(hyper::header::HOST, &self.cfg.endpoint.authority)
            .header(
                hyper::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            );
        if let Some(v) = super::authorization(&self.cfg.auth) {
            req = req.header(hyper::header::AUTHORIZATION, v);
        }
        let req = req
            .body(Full::new(Bytes::from(self.metrics.render())))
            .map_err(|e| SinkError::Connection {
                sink: NAME,
                message: e.to_string(),
            })?;
        match httpc::send(&self.cfg.endpoint, req, self.cfg.timeout, 64 * 1024).await {
            Ok((status, _)) if (200..300).contains(&status) => Ok(()),
            Ok((status, body)) => Err(super::status_error(NAME, status, &body)),
            Err(e) => Err(super::http_error(NAME, e)),
        }
    }

    /// Pushes until `shutdown`, then makes one last push so the central side sees final values.
    pub async fn run(self, shutdown: CancellationToken) {
        let m = &self.metrics.sink;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let mut health = super::SinkHealth::new(NAME, self.metrics.clone(), &self.state_dir);
        let mut next_at = Instant::now();
        loop {
            let last = tokio::select! {
                biased;
                _ = shutdown.cancelled() => true,
                _ = tokio::time::sleep_until(next_at) => false,
            };
            match self.push().await {
                Ok(()) => {
                    m.sent.with_label_values(&[NAME]).inc();
                    if health.delivered() {
                        tracing::info!(sink = NAME, url = %self.cfg.endpoint.authority, "sink_online");
                    }
                    backoff.reset();
                    next_at = Instant::now() + self.interval;
                }
                Err(e) => {
                    health.failed(&e);
                    next_at = Instant::now() + backoff.next_delay().min(self.interval);
                }
            }
            if last {
                return;
            }
        }
    }
}
