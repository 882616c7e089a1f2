//! Prometheus remote-write 1.0 sink: replays spooled metrics snapshots with their original
//! timestamps into Prometheus (`--web.enable-remote-write-receiver`), Mimir, Thanos Receive,
//! VictoriaMetrics or Cortex, so the history of an outage reaches the central side.
//!
//! Wire format (the 1.0 spec): a protobuf `WriteRequest` of `TimeSeries` (labels sorted by name,
//! `__name__` included; each series' samples in time order), block-compressed with snappy, POSTed
//! with `Content-Encoding: snappy`, `Content-Type: application/x-protobuf` and
//! `X-Prometheus-Remote-Write-Version: 0.1.0`. Series are exactly those a scrape of `/metrics`
//! produces (`_bucket{le}`, `_sum`, `_count`, `_total`), plus the configured external labels, so
//! the same PromQL works on backfilled and scraped data.
//!
//! Delivery: a batch is acknowledged to the spool on a 2xx. 5xx, 429 and network errors are
//! retried with capped backoff; any other 4xx means the receiver will never take the batch (too
//! old for its out-of-order window, a duplicate with another value, ...): the batch is sent again
//! in halves until the refused record is alone, and only that one is logged, counted in
//! `copilot_edge_sink_rejected_records_total` and acknowledged, so it cannot block the records
//! after it. Snapshots stamped ahead of the receiver's clock (see [`crate::clock`]) are skipped and
//! counted the same way. Log records are not metrics and are acknowledged without sending.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{parse_samples, Backoff, SinkError, SinkHealth};
use crate::clock::now_ms;
use crate::config::RemoteWriteSinkConfig;
use crate::httpc;
use crate::metrics::Metrics;
use crate::spool::segment::{Kind, Record};
use crate::spool::Spool;

/// Sink name, the `sink` label value and the spool cursor name.
pub const NAME: &str = "remote_write";

/// Records read, and at most sent, per request.
const MAX_RECORDS: usize = 512;

// ------------------------------------------------------------------------------------------
// Protobuf encoding (hand-written: three small messages do not justify a code generator).
// ------------------------------------------------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn len_field(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// One series with its samples `(timestamp_ms, value)` in time order.
pub type Series = (Vec<(String, String)>, Vec<(i64, f64)>);

/// Encodes a `WriteRequest` (uncompressed).
pub fn encode_write_request(series: &[Series]) -> Vec<u8> {
    let mut out = Vec::with_capacity(series.len() * 128);
    let mut ts_buf = Vec::with_capacity(256);
    let mut item = Vec::with_capacity(64);
    for (labels, samples) in series {
        ts_buf.clear();
        for (name, value) in labels {
            item.clear();
            len_field(0x0A, name.as_bytes(), &mut item); // Label.name = 1
            len_field(0x12, value.as_bytes(), &mut item); // Label.value = 2
            len_field(0x0A, &item, &mut ts_buf); // TimeSeries.labels = 1
        }
        for (ts, v) in samples {
            item.clear();
            item.push(0x09); // Sample.value = 1, fixed64
            item.extend_from_slice(&v.to_le_bytes());
            item.push(0x10); // Sample.timestamp = 2, varint
            varint(*ts as u64, &mut item);
            len_field(0x12, &item, &mut ts_buf); // TimeSeries.samples = 2
        }
        len_field(0x0A, &ts_buf, &mut out); // WriteRequest.timeseries = 1
    }
    out
}

/// Turns snapshots into series: labels sorted by name (with `__name__`), external labels added
/// where missing, samples in time order.
pub fn snapshots_to_series(snapshots: &[&Record], external: &[(String, String)]) -> Vec<Series> {
    let mut map: BTreeMap<Vec<(String, String)>, Vec<(i64, f64)>> = BTreeMap::new();
    for r in snapshots {
        for s in parse_samples(&String::from_utf8_lossy(&r.payload)) {
            let mut labels = s.labels;
            for (k, v) in external {
                if !labels.iter().any(|(lk, _)| lk == k) {
                    labels.push((k.clone(), v.clone()));
                }
            }
            labels.push(("__name__".to_string(), s.name));
            labels.sort();
            map.entry(labels).or_default().push((r.ts_ms, s.value));
        }
    }
    map.into_iter()
        .map(|(l, mut s)| {
            s.sort_by_key(|x| x.0);
            s.dedup_by_key(|x| x.0);
            (l, s)
        })
        .collect()
}

// ------------------------------------------------------------------------------------------

/// Statuses by which a receiver refuses the data itself, for good: 400 (Prometheus "out of
/// order"/"too old sample", a malformed series), 409 (a duplicate with another value), 413 (a
/// batch larger than it takes), 422 (invalid samples). Everything else — 401/403 (credentials),
/// 404/405 (a wrong path or a proxy), 429, 5xx — is retried with the backlog kept, with one
/// exception: Prometheus up to 2.4x (Debian 12 ships 2.42) answers a sample older than its
/// out-of-order window with **500** "too old sample" (or "out of bounds"), which no retry can
/// change; retrying it would stall the backlog behind it forever (found by `tests/fleet`).
fn refuses_data(status: u16, body: &[u8]) -> bool {
    matches!(status, 400 | 409 | 413 | 422)
        || (status == 500
            && refused_for_time(&String::from_utf8_lossy(&body[..body.len().min(300)])))
}

/// A receiver's refusal that names the samples' time (Prometheus "too old sample", "out of
/// bounds", "out of order"; VictoriaMetrics "too small timestamp" / "too big timestamp").
fn refused_for_time(message: &str) -> bool {
    [
        "too old sample",
        "out of bounds",
        "out of order",
        "too small timestamp",
        "too big timestamp",
    ]
    .iter()
    .any(|p| message.contains(p))
}

enum Outcome {
    Delivered,
    Rejected(u16, String),
    Retry(SinkError),
}

/// The remote-write sink.
pub struct RemoteWriteSink {
    cfg: RemoteWriteSinkConfig,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    live_after_ms: i64,
    /// With `batch_snapshots` > 1: how long the first of fewer pending live snapshots waits for
    /// the others (one interval short of the batch, plus half an interval of slack).
    hold: Duration,
}

impl RemoteWriteSink {
    /// A sink draining `spool`.
    pub fn new(
        cfg: RemoteWriteSinkConfig,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        snapshot_interval: Duration,
    ) -> Self {
        metrics.sink.up.with_label_values(&[NAME]).set(0);
        let batch = cfg.batch_snapshots.max(1) as u32;
        RemoteWriteSink {
            // A snapshot held for its batch is still live (never throttled as backlog).
            live_after_ms: ((batch + 1).max(2) as u128 * snapshot_interval.as_millis()).max(2000)
                as i64,
            hold: snapshot_interval * (batch - 1) + snapshot_interval / 2,
            cfg,
            spool,
            metrics,
        }
    }

    async fn post(&self, snapshots: &[&Record]) -> Outcome {
        let series = snapshots_to_series(snapshots, &self.cfg.external_labels);
        let raw = encode_write_request(&series);
        let body = match snap::raw::Encoder::new().compress_vec(&raw) {
            Ok(b) => b,
            Err(e) => return Outcome::Rejected(0, format!("snappy: {e}")),
        };
        let mut req = hyper::Request::post(&self.cfg.path)
            .header(hyper::header::HOST, &self.cfg.endpoint.authority)
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .header(hyper::header::CONTENT_ENCODING, "snappy")
            .header(
                hyper::header::USER_AGENT,
                concat!("copilot-edge/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        if let Some(v) = super::authorization(&self.cfg.auth) {
            req = req.header(hyper::header::AUTHORIZATION, v);
        }
        let req = match req.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return Outcome::Rejected(0, e.to_string()),
        };
        match httpc::send(&self.cfg.endpoint, req, self.cfg.timeout, 64 * 1024).await {
            Ok((s, _)) if (200..300).contains(&s) => Outcome::Delivered,
            // Only a receiver refusing the data itself may cause a skip; auth, routing, rate
            // limits and server trouble say nothing about the data and are retried.
            Ok((s, body)) if refuses_data(s, &body) => Outcome::Rejected(
                s,
                String::from_utf8_lossy(&body[..body.len().min(300)])
                    .trim()
                    .to_string(),
            ),
            Ok((s, body)) => Outcome::Retry(super::status_error(NAME, s, &body)),
            Err(e) => Outcome::Retry(super::http_error(NAME, e)),
        }
    }

    /// Replays and streams until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let m = &self.metrics.sink;
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        // A receiver that refuses every batch (a clock far off, a bad label) must not turn into
        // a log line per batch: the first, then at most one a minute with a count.
        let mut rejections = crate::logging::Throttle::new(Duration::from_secs(60));
        let mut health = SinkHealth::new(NAME, self.metrics.clone(), self.spool.dir());
        let rate = self.cfg.backlog_records_per_sec as f64;
        let (mut tokens, mut last_refill) = (rate, Instant::now());
        let mut live_upto = 0u64;
        // Snapshots already sent live ahead of a throttled replay (ascending seqs): the replay
        // skips them in their place, so no sample reaches the receiver twice. Kept in memory
        // only: after a restart the replay may resend one or two (at-least-once, as a crash is).
        let mut sent_live: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
        // Records per request: halved while the receiver refuses a batch, so the records it would
        // take are not skipped with the one it refuses; doubled back after each delivery.
        let mut max_records = MAX_RECORDS;
        let mut future_log = crate::logging::Throttle::new(Duration::from_secs(60));
        // With batch_snapshots > 1: the first pending snapshot held for its batch, and since when.
        let mut holding: Option<(u64, Instant)> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if crate::clock::skew_is_stale() {
                // The wall clock stepped since the receiver's clock was last seen: ask it again
                // (an empty request; its answer's Date) before judging timestamps on it. (Before
                // the first answer nothing is asked: that answer's Date comes with it, and a
                // batch refused for its times is split and read again with them corrected.)
                let _ = self.post(&[]).await;
            }
            let acked = self.spool.acked(NAME);
            while sent_live.front().is_some_and(|s| *s <= acked) {
                sent_live.pop_front();
            }
            let recs = match self.spool.read(acked, MAX_RECORDS, 64 * 1024 * 1024) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(sink = NAME, error = %e, "sink_spool_read_failed");
                    Vec::new()
                }
            };
            if recs.is_empty() {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = self.spool.appended.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                continue;
            }
            // A metered uplink: live snapshots go out `batch_snapshots` at a time (the labels
            // travel once per request), the first held at most `hold`. A backlog is never held.
            let pending = recs
                .iter()
                .filter(|r| r.kind == Kind::Metrics && !sent_live.contains(&r.seq))
                .count();
            if pending > 0 && pending < self.cfg.batch_snapshots {
                let first = recs[0].seq;
                let since = match holding {
                    Some((seq, at)) if seq == first => at,
                    _ => holding.insert((first, Instant::now())).1,
                };
                let left = self.hold.saturating_sub(since.elapsed());
                if !left.is_zero() {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        _ = self.spool.appended.notified() => {}
                        _ = tokio::time::sleep(left.min(Duration::from_secs(1))) => {}
                    }
                    continue;
                }
            }
            holding = None;
            // Take a prefix within the sample budget and the backlog rate.
            let now = now_ms();
            tokens = (tokens + last_refill.elapsed().as_secs_f64() * rate).min(rate.max(1.0));
            last_refill = Instant::now();
            let mut batch: Vec<&Record> = Vec::new();
            let mut last_seq = acked;
            let mut samples = 0usize;
            let mut throttled = false;
            // Never send the future: a snapshot stamped ahead of the receiver's clock beyond the
            // tolerance was taken under a wrong clock before the skew was known (the spool
            // stamps with the receiver's time once it is). Sent, it would stand in the store's
            // way for every gateway until that time; it is skipped and counted instead (a
            // snapshot's counters are cumulative: the next one carries them).
            let future_limit =
                crate::clock::receiver_now_ms().map(|t| t + crate::clock::TOLERANCE_SECS * 1000);
            let mut future = 0u64;
            for r in &recs {
                if r.kind == Kind::Metrics && sent_live.contains(&r.seq) {
                    // Went out live while the replay was behind: acknowledged in its place.
                } else if r.kind == Kind::Metrics && future_limit.is_some_and(|l| r.ts_ms > l) {
                    future += 1;
                } else if r.kind == Kind::Metrics {
                    if batch.len() >= max_records {
                        break;
                    }
                    let n = r.payload.iter().filter(|b| **b == b'\n').count();
                    if !batch.is_empty() && samples + n > self.cfg.max_samples_per_request {
                        break;
                    }
                    if now - r.ts_ms > self.live_after_ms {
                        if tokens < 1.0 {
                            throttled = true;
                            break;
                        }
                        tokens -= 1.0;
                    }
                    samples += n;
                    batch.push(r);
                }
                last_seq = r.seq;
            }
            if future > 0 {
                m.rejected.with_label_values(&[NAME]).inc_by(future);
                if let Some(suppressed) = future_log.hit() {
                    tracing::warn!(
                        sink = NAME,
                        records = future,
                        similar_suppressed = suppressed,
                        skew_seconds = crate::clock::skew_seconds(),
                        "sink_future_records_skipped"
                    );
                }
            }
            if throttled {
                // Live first: the newest snapshot goes out now, and its place in the replay is
                // skipped later.
                if let Some(latest) = self
                    .spool
                    .last_seq_of(Kind::Metrics)
                    .filter(|s| *s > last_seq && *s > live_upto)
                {
                    if let Some(r) = self
                        .spool
                        .read(latest - 1, 1, usize::MAX)
                        .ok()
                        .and_then(|mut v| v.pop())
                        .filter(|r| r.seq == latest)
                    {
                        if let Outcome::Delivered = self.post(&[&r]).await {
                            live_upto = latest;
                            sent_live.push_back(latest);
                            m.sent.with_label_values(&[NAME]).inc();
                        }
                    }
                }
                if batch.is_empty() {
                    let wait = Duration::from_secs_f64(((1.0 - tokens) / rate).max(0.001));
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            }
            let outcome = if batch.is_empty() {
                Outcome::Delivered
            } else {
                self.post(&batch).await
            };
            match outcome {
                Outcome::Delivered => {
                    if let Err(e) = self.spool.ack(NAME, last_seq) {
                        tracing::error!(sink = NAME, error = %e, "sink_ack_failed");
                    }
                    if !batch.is_empty() {
                        m.sent.with_label_values(&[NAME]).inc_by(batch.len() as u64);
                        if health.delivered() {
                            tracing::info!(sink = NAME, url = %self.cfg.endpoint.authority, acked = last_seq, "sink_online");
                        }
                    }
                    backoff.reset();
                    max_records = (max_records * 2).min(MAX_RECORDS);
                }
                Outcome::Rejected(status, _) if batch.len() > 1 => {
                    // Split: the refusal may concern only some of these records.
                    tracing::debug!(
                        sink = NAME,
                        status,
                        records = batch.len(),
                        "sink_batch_split"
                    );
                    max_records = batch.len() / 2;
                }
                Outcome::Rejected(status, message) => {
                    m.rejected
                        .with_label_values(&[NAME])
                        .inc_by(batch.len() as u64);
                    m.errors.with_label_values(&[NAME, "rejected"]).inc();
                    if let Some(suppressed) = rejections.hit() {
                        // A refusal by time is a clock problem until shown otherwise: say so,
                        // with the record's time and the skew measured.
                        let cause = refused_for_time(&message).then_some("record_time");
                        tracing::warn!(sink = NAME, status, error = %message, records = batch.len(), first_seq = batch[0].seq, last_seq, record_ts_ms = batch[0].ts_ms, cause, clock_skew_seconds = crate::clock::skew_seconds(), similar_suppressed = suppressed, "sink_batch_rejected");
                    }
                    if let Err(e) = self.spool.ack(NAME, last_seq) {
                        tracing::error!(sink = NAME, error = %e, "sink_ack_failed");
                    }
                }
                Outcome::Retry(e) => {
                    health.failed(&e);
                    let d = backoff.next_delay();
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_refusal_of_the_data_skips() {
        for s in [400, 409, 413, 422] {
            assert!(refuses_data(s, b""), "{s}");
        }
        for s in [401, 403, 404, 405, 407, 429, 500, 502, 503] {
            assert!(!refuses_data(s, b"internal error"), "{s}");
        }
        // Prometheus 2.42's answer to a sample older than its out-of-order window.
        assert!(refuses_data(500, b"too old sample\n"));
        assert!(refuses_data(500, b"out of bounds"));
        assert!(refuses_data(500, b"out of order sample"));
        assert!(refused_for_time("too small timestamp"));
        assert!(!refused_for_time("label name invalid"));
        assert!(!refuses_data(503, b"too old sample"));
    }

    use super::*;

    #[test]
    fn varints_encode_seven_bits_per_byte_low_first() {
        for (v, want) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (127, vec![127]),
            (128, vec![0x80, 1]),
            (300, vec![0xAC, 0x02]),
        ] {
            let mut out = Vec::new();
            varint(v, &mut out);
            assert_eq!(out, want, "{v}");
        }
    }

    #[test]
    fn write_request_bytes() {
        // One series {__name__="up"} with one sample (1.0 at t=1000), encoded by hand from the
        // proto definitions.
        let got =
            encode_write_request(&[(vec![("__name__".into(), "up".into())], vec![(1000, 1.0)])]);
        let label = [&[0x0A, 8][..], b"__name__", &[0x12, 2], b"up"].concat();
        let sample = [&[0x09][..], &1.0f64.to_le_bytes(), &[0x10, 0xE8, 0x07]].concat();
        let ts = [
            &[0x0A, label.len() as u8][..],
            &label,
            &[0x12, sample.len() as u8],
            &sample,
        ]
        .concat();
        let want = [&[0x0A, ts.len() as u8][..], &ts].concat();
        assert_eq!(got, want);
    }

    #[test]
    fn series_are_sorted_and_merged_across_snapshots() {
        let snap = |seq, ts, text: &str| Record {
            seq,
            ts_ms: ts,
            kind: Kind::Metrics,
            payload: text.as_bytes().to_vec(),
        };
        let a = snap(
            1,
            1000,
            "b_total{z=\"1\",a=\"2\"} 1\nh_bucket{le=\"+Inf\"} 3\n",
        );
        let b = snap(2, 2000, "b_total{z=\"1\",a=\"2\"} 4\n");
        let s = snapshots_to_series(
            &[&a, &b],
            &[("site".into(), "p7".into()), ("a".into(), "ignored".into())],
        );
        assert_eq!(s.len(), 2);
        let labels: Vec<&str> = s[0].0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(labels, vec!["__name__", "a", "site", "z"]);
        assert_eq!(
            s[0].0[1].1, "2",
            "a series' own label wins over an external one"
        );
        assert_eq!(s[0].1, vec![(1000, 1.0), (2000, 4.0)]);
        assert_eq!(s[1].0[0], ("__name__".to_string(), "h_bucket".to_string()));
    }
}
