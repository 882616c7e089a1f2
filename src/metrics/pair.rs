//! [`PairCounter`]: a two-label counter family rendered straight from its atomics.

use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, RwLock};

use prometheus::core::Collector;

use super::text::push_escaped;
use super::MetricsError;

/// A counter family with two labels whose values come from requests, kept as atomics in a
/// two-level map and rendered straight from it: no per-scrape allocation, which matters for the
/// family whose series count grows with request-supplied ids (equipment per plant, thousands of
/// series). Increments take a read lock and an atomic add; only a new label pair takes the write
/// lock. The label values are bounded by [`LabelGuard`](super::LabelGuard) before they get here.
pub struct PairCounter {
    desc: prometheus::core::Desc,
    name: &'static str,
    help: &'static str,
    labels: [&'static str; 2],
    map: RwLock<HashMap<Box<str>, HashMap<Box<str>, std::sync::atomic::AtomicU64>>>,
}

impl PairCounter {
    pub(super) fn new(
        name: &'static str,
        help: &'static str,
        labels: [&'static str; 2],
    ) -> Result<Self, MetricsError> {
        let desc = prometheus::core::Desc::new(
            name.into(),
            help.into(),
            labels.iter().map(|l| l.to_string()).collect(),
            std::collections::HashMap::new(),
        )?;
        Ok(PairCounter {
            desc,
            name,
            help,
            labels,
            map: RwLock::new(HashMap::default()),
        })
    }

    /// Adds one to the series (`a`, `b`).
    pub fn inc(&self, a: &str, b: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(c) = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(a)
            .and_then(|m| m.get(b))
        {
            c.fetch_add(1, Relaxed);
            return;
        }
        let mut w = self.map.write().unwrap_or_else(|e| e.into_inner());
        w.entry(a.into())
            .or_default()
            .entry(b.into())
            .or_default()
            .fetch_add(1, Relaxed);
    }

    /// The value of series (`a`, `b`), if it exists.
    pub fn get(&self, a: &str, b: &str) -> Option<u64> {
        let m = self.map.read().unwrap_or_else(|e| e.into_inner());
        m.get(a)
            .and_then(|x| x.get(b))
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Appends this family in the text exposition format.
    pub(super) fn encode(&self, const_labels: &str, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let m = self.map.read().unwrap_or_else(|e| e.into_inner());
        if m.is_empty() {
            return;
        }
        let _ = write!(
            out,
            "# HELP {} {}\n# TYPE {} counter\n",
            self.name, self.help, self.name
        );
        for (a, inner) in m.iter() {
            for (b, c) in inner {
                out.extend_from_slice(self.name.as_bytes());
                out.push(b'{');
                out.extend_from_slice(self.labels[0].as_bytes());
                out.extend_from_slice(b"=\"");
                push_escaped(out, a, true);
                out.extend_from_slice(b"\",");
                out.extend_from_slice(self.labels[1].as_bytes());
                out.extend_from_slice(b"=\"");
                push_escaped(out, b, true);
                out.push(b'"');
                if !const_labels.is_empty() {
                    out.push(b',');
                    out.extend_from_slice(const_labels.as_bytes());
                }
                let _ = writeln!(out, "}} {}", c.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
    }
}

/// Registers a [`PairCounter`] with the crate's registry (for [`Metrics::gather`]).
#[derive(Clone)]
pub(super) struct PairCounterHandle(pub(super) Arc<PairCounter>);

impl Collector for PairCounterHandle {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};
        let p = &self.0;
        let mut mf = MetricFamily::default();
        mf.set_name(p.name.to_string());
        mf.set_help(p.help.to_string());
        mf.set_field_type(MetricType::COUNTER);
        let m = p.map.read().unwrap_or_else(|e| e.into_inner());
        let mut metrics = Vec::new();
        for (a, inner) in m.iter() {
            for (b, c) in inner {
                let mut pairs = Vec::with_capacity(2);
                for (k, v) in [(p.labels[0], a), (p.labels[1], b)] {
                    let mut lp = LabelPair::default();
                    lp.set_name(k.to_string());
                    lp.set_value(v.to_string());
                    pairs.push(lp);
                }
                let mut counter = Counter::default();
                counter.set_value(c.load(std::sync::atomic::Ordering::Relaxed) as f64);
                let mut metric = Metric::from_label(pairs);
                metric.set_counter(counter);
                metrics.push(metric);
            }
        }
        mf.set_metric(metrics);
        vec![mf]
    }
}
