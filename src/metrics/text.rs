//! The Prometheus text exposition writer `Metrics::render` uses (families by name, series
//! unsorted, the gateway's constant label added to every series).

pub(super) fn push_escaped(out: &mut Vec<u8>, s: &str, quote: bool) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
}

pub(super) fn push_value(out: &mut Vec<u8>, v: f64) {
    use std::io::Write as _;
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn push_series(
    out: &mut Vec<u8>,
    name: &str,
    suffix: &str,
    labels: &[prometheus::proto::LabelPair],
    extra: Option<(&str, f64)>,
    const_labels: &str,
    value: f64,
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    let braces = !labels.is_empty() || extra.is_some() || !const_labels.is_empty();
    if braces {
        out.push(b'{');
        let mut sep = false;
        for l in labels {
            if std::mem::replace(&mut sep, true) {
                out.push(b',');
            }
            out.extend_from_slice(l.name().as_bytes());
            out.extend_from_slice(b"=\"");
            push_escaped(out, l.value(), true);
            out.push(b'"');
        }
        if let Some((k, v)) = extra {
            if std::mem::replace(&mut sep, true) {
                out.push(b',');
            }
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"=\"");
            push_value(out, v);
            out.push(b'"');
        }
        if !const_labels.is_empty() {
            if sep {
                out.push(b',');
            }
            out.extend_from_slice(const_labels.as_bytes());
        }
        out.push(b'}');
    }
    out.push(b' ');
    push_value(out, value);
    out.push(b'\n');
}

/// Prometheus text exposition (format 0.0.4) of `families`, with `const_labels`
/// (`name="value"`, already escaped) appended to every series. Written by hand because the
/// crate's encoder formats every label through `write!` and this runs on every scrape and
/// snapshot.
pub fn encode_text(
    families: &[prometheus::proto::MetricFamily],
    const_labels: &str,
    out: &mut Vec<u8>,
) {
    use prometheus::proto::MetricType;
    for mf in families {
        let name = mf.name();
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
        push_escaped(out, mf.help(), false);
        out.extend_from_slice(b"\n# TYPE ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(match mf.get_field_type() {
            MetricType::COUNTER => b" counter\n".as_slice(),
            MetricType::GAUGE => b" gauge\n",
            MetricType::HISTOGRAM => b" histogram\n",
            MetricType::SUMMARY => b" summary\n",
            MetricType::UNTYPED => b" untyped\n",
        });
        for m in mf.get_metric() {
            let labels = m.get_label();
            match mf.get_field_type() {
                MetricType::COUNTER => push_series(
                    out,
                    name,
                    "",
                    labels,
                    None,
                    const_labels,
                    m.get_counter().get_value(),
                ),
                MetricType::GAUGE => push_series(
                    out,
                    name,
                    "",
                    labels,
                    None,
                    const_labels,
                    m.get_gauge().get_value(),
                ),
                #[allow(deprecated)] // the crate's only accessor for untyped values
                MetricType::UNTYPED => push_series(
                    out,
                    name,
                    "",
                    labels,
                    None,
                    const_labels,
                    m.get_untyped().get_value(),
                ),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        push_series(
                            out,
                            name,
                            "_bucket",
                            labels,
                            Some(("le", b.upper_bound())),
                            const_labels,
                            b.cumulative_count() as f64,
                        );
                    }
                    push_series(
                        out,
                        name,
                        "_bucket",
                        labels,
                        Some(("le", f64::INFINITY)),
                        const_labels,
                        h.get_sample_count() as f64,
                    );
                    push_series(
                        out,
                        name,
                        "_sum",
                        labels,
                        None,
                        const_labels,
                        h.get_sample_sum(),
                    );
                    push_series(
                        out,
                        name,
                        "_count",
                        labels,
                        None,
                        const_labels,
                        h.get_sample_count() as f64,
                    );
                }
                MetricType::SUMMARY => {
                    let sm = m.get_summary();
                    for q in sm.get_quantile() {
                        push_series(
                            out,
                            name,
                            "",
                            labels,
                            Some(("quantile", q.quantile())),
                            const_labels,
                            q.value(),
                        );
                    }
                    push_series(
                        out,
                        name,
                        "_sum",
                        labels,
                        None,
                        const_labels,
                        sm.sample_sum(),
                    );
                    push_series(
                        out,
                        name,
                        "_count",
                        labels,
                        None,
                        const_labels,
                        sm.sample_count() as f64,
                    );
                }
            }
        }
    }
}
