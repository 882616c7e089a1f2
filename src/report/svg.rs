//! Small inline SVG charts for the HTML report: a bar chart (requests per day) and a line chart
//! (P95 per day against the SLA). No scripts, fonts or external references; the markup is plain
//! SVG 1.1 that an HTML5 page may contain inline. The y axis runs from 0 to a "nice" maximum
//! (1, 2, 2.5 or 5 × 10ⁿ) at or above the largest value, so gridlines land on round numbers.

use super::fmt::escape_html;

/// Chart width in px.
pub const WIDTH: f64 = 560.0;
/// Chart height in px.
pub const HEIGHT: f64 = 200.0;
/// Plot area margins: left (axis labels), right, top, bottom (day labels).
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 24.0;

/// The smallest of 1, 2, 2.5, 5 × 10ⁿ that is ≥ `v` (and 1 for v ≤ 0 or not finite).
pub fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        // Relative slack so that 1000 with a magnitude computed as 999.999… stays 1000.
        if v <= m * mag * (1.0 + 1e-12) {
            return m * mag;
        }
    }
    10.0 * mag
}

/// The y pixel of value `v` on an axis from 0 (bottom of the plot) to `max` (top).
pub fn y_of(v: f64, max: f64) -> f64 {
    let plot = HEIGHT - TOP - BOTTOM;
    let frac = if max > 0.0 {
        (v / max).clamp(0.0, 1.0)
    } else {
        0.0
    };
    TOP + plot * (1.0 - frac)
}

/// The x pixel of the centre of slot `i` of `n`.
pub fn x_of(i: usize, n: usize) -> f64 {
    let plot = WIDTH - LEFT - RIGHT;
    LEFT + plot * (i as f64 + 0.5) / n.max(1) as f64
}

fn r1(v: f64) -> String {
    format!("{:.1}", v)
}

/// Axis, gridlines (0, ½ and the maximum) and slot labels.
fn frame(title: &str, labels: &[String], max: f64, unit: &dyn Fn(f64) -> String) -> String {
    let mut s = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        escape_html(title)
    );
    s.push_str(&format!("<title>{}</title>", escape_html(title)));
    for g in [0.0, max / 2.0, max] {
        let y = r1(y_of(g, max));
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" class=\"grid\"/><text x=\"{}\" y=\"{y}\" class=\"axis\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            escape_html(&unit(g))
        ));
    }
    for (i, l) in labels.iter().enumerate() {
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
            r1(x_of(i, labels.len())),
            HEIGHT - 6.0,
            escape_html(l)
        ));
    }
    s
}

/// Bars for `values` (None = no data: no bar), one slot per label.
pub fn bar_chart(
    title: &str,
    labels: &[String],
    values: &[Option<f64>],
    unit: &dyn Fn(f64) -> String,
) -> String {
    let max = nice_ceiling(values.iter().flatten().copied().fold(0.0, f64::max));
    let mut s = frame(title, labels, max, unit);
    let slot = (WIDTH - LEFT - RIGHT) / labels.len().max(1) as f64;
    let w = slot * 0.6;
    for (i, v) in values.iter().enumerate() {
        let Some(v) = v else { continue };
        let y = y_of(*v, max);
        s.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" class=\"bar\" data-value=\"{v}\"><title>{}: {}</title></rect>",
            r1(x_of(i, labels.len()) - w / 2.0),
            r1(y),
            r1(w),
            r1(y_of(0.0, max) - y),
            escape_html(labels.get(i).map_or("", |l| l.as_str())),
            escape_html(&unit(*v))
        ));
    }
    s.push_str("</svg>");
    s
}

/// A line through `values` (gaps where None) with a dashed reference line at `reference`.
pub fn line_chart(
    title: &str,
    labels: &[String],
    values: &[Option<f64>],
    reference: f64,
    unit: &dyn Fn(f64) -> String,
) -> String {
    let top = values.iter().flatten().copied().fold(reference, f64::max);
    let max = nice_ceiling(top * 1.1);
    let mut s = frame(title, labels, max, unit);
    let yr = r1(y_of(reference, max));
    s.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{yr}\" x2=\"{}\" y2=\"{yr}\" class=\"sla\"/><text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"end\">SLA {}</text>",
        WIDTH - RIGHT,
        WIDTH - RIGHT,
        r1(y_of(reference, max) - 4.0),
        escape_html(&unit(reference))
    ));
    // One polyline per run of consecutive values, so a day without data is a gap, not a dip.
    let mut run: Vec<String> = Vec::new();
    let flush = |run: &mut Vec<String>, s: &mut String| {
        if run.len() > 1 {
            s.push_str(&format!(
                "<polyline points=\"{}\" class=\"line\"/>",
                run.join(" ")
            ));
        }
        run.clear();
    };
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => run.push(format!(
                "{},{}",
                r1(x_of(i, labels.len())),
                r1(y_of(*v, max))
            )),
            None => flush(&mut run, &mut s),
        }
    }
    flush(&mut run, &mut s);
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = v {
            s.push_str(&format!(
                "<circle cx=\"{}\" cy=\"{}\" r=\"3\" class=\"{}\" data-value=\"{v}\"><title>{}: {}</title></circle>",
                r1(x_of(i, labels.len())),
                r1(y_of(*v, max)),
                if *v > reference { "dot over" } else { "dot" },
                escape_html(labels.get(i).map_or("", |l| l.as_str())),
                escape_html(&unit(*v))
            ));
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        let cases = [
            (0.0, 1.0),
            (-3.0, 1.0),
            (f64::NAN, 1.0),
            (1.0, 1.0),
            (1.2, 2.0),
            (2.0, 2.0),
            (2.2, 2.5),
            (3.0, 5.0),
            (7.0, 10.0),
            (11520.0, 20000.0),
            (1000.0, 1000.0),
            (0.55, 1.0),
            (0.0012, 0.002),
        ];
        for (v, want) in cases {
            let got = nice_ceiling(v);
            assert!((got - want).abs() < want * 1e-9, "{v} → {got}, want {want}");
        }
    }

    #[test]
    fn values_scale_into_the_plot_area_and_clamp() {
        let bottom = HEIGHT - BOTTOM;
        assert_eq!(y_of(0.0, 100.0), bottom);
        assert_eq!(y_of(100.0, 100.0), TOP);
        assert_eq!(y_of(50.0, 100.0), (TOP + bottom) / 2.0);
        assert_eq!(y_of(500.0, 100.0), TOP, "clamped to the plot");
        assert_eq!(y_of(5.0, 0.0), bottom);
        assert_eq!(x_of(0, 2), LEFT + (WIDTH - LEFT - RIGHT) / 4.0);
        assert_eq!(x_of(1, 2), LEFT + 3.0 * (WIDTH - LEFT - RIGHT) / 4.0);
    }

    fn labels() -> Vec<String> {
        ["Mon", "Tue", "Wed"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn bars_have_heights_proportional_to_values() {
        let svg = bar_chart(
            "Requests",
            &labels(),
            &[Some(100.0), None, Some(50.0)],
            &|v| v.to_string(),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 2, "no bar without data");
        // max 100 → full plot height for the first bar, half for the last.
        let plot = HEIGHT - TOP - BOTTOM;
        assert!(
            svg.contains(&format!(
                "height=\"{:.1}\" class=\"bar\" data-value=\"100\"",
                plot
            )),
            "{svg}"
        );
        assert!(
            svg.contains(&format!(
                "height=\"{:.1}\" class=\"bar\" data-value=\"50\"",
                plot / 2.0
            )),
            "{svg}"
        );
        assert!(!svg.contains("http"));
    }

    #[test]
    fn line_breaks_at_gaps_and_marks_points_over_the_reference() {
        let svg = line_chart(
            "P95 <per day>",
            &labels(),
            &[Some(0.3), None, Some(0.7)],
            0.5,
            &|v| format!("{:.0} ms", v * 1000.0),
        );
        assert_eq!(
            svg.matches("<polyline").count(),
            0,
            "no two consecutive points"
        );
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(svg.matches("dot over").count(), 1);
        assert!(svg.contains("P95 &lt;per day&gt;"));
        assert!(svg.contains("SLA 500 ms"));
        let svg = line_chart(
            "x",
            &labels(),
            &[Some(0.3), Some(0.4), Some(0.2)],
            0.5,
            &|v| v.to_string(),
        );
        assert_eq!(svg.matches("<polyline").count(), 1);
    }
}
