//! How numbers are shown, in one place so the Markdown, the HTML and the health reasons round
//! the same way (and the rounding stated in the report is the rounding applied):
//! percentages to 2 decimals, latency to 0.1 ms, counts to whole numbers with thousands
//! separators, money to the cent, ratings to 2 decimals, durations to the minute. Also the
//! HTML escaping the page and its charts share.

/// `0.991076` → `99.11%`.
pub fn pct(ratio: f64) -> String {
    format!("{:.2}%", ratio * 100.0)
}

/// Seconds → `330.5 ms`.
pub fn ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1000.0)
}

/// `69120.0` → `69,120` (rounded to a whole number).
pub fn count(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let n = v.round();
    let digits = format!("{:.0}", n.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `47.25` → `$47.25`.
pub fn usd(v: f64) -> String {
    format!("${v:.2}")
}

/// A rating: `4.3` → `4.30`.
pub fn score(v: f64) -> String {
    format!("{v:.2}")
}

/// Seconds → `2h 55m`, `45m`, `3d 2h`; under a minute → `<1m`.
pub fn duration(secs: i64) -> String {
    let m = (secs + 30) / 60;
    if m == 0 {
        return "<1m".to_string();
    }
    let (d, h, m) = (m / 1440, m % 1440 / 60, m % 60);
    match (d, h, m) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) if h > 0 => format!("{d}d {h}h"),
        (d, _, _) => format!("{d}d"),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_as_the_report_states() {
        let cases: &[(String, &str)] = &[
            (pct(0.991076), "99.11%"),
            (pct(0.05), "5.00%"),
            (pct(1.0 / 30.0), "3.33%"),
            (ms(0.33054), "330.5 ms"),
            (ms(2.275), "2275.0 ms"),
            (count(0.0), "0"),
            (count(999.4), "999"),
            (count(1000.0), "1,000"),
            (count(69120.0), "69,120"),
            (count(3_225_600.0), "3,225,600"),
            (count(-1234.0), "-1,234"),
            (usd(47.25), "$47.25"),
            (usd(0.004), "$0.00"),
            (score(4.3), "4.30"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn durations_round_to_the_minute() {
        let cases = [
            (0, "<1m"),
            (29, "<1m"),
            (60, "1m"),
            (1800, "30m"),
            (3600, "1h"),
            (10_500, "2h 55m"),
            (86_400, "1d"),
            (3 * 86_400 + 2 * 3600 + 5 * 60, "3d 2h"),
        ];
        for (secs, want) in cases {
            assert_eq!(duration(secs), want, "{secs}");
        }
    }
}
