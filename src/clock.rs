//! The gateway's wall clock against its receivers'.
//!
//! Gateways without a battery-backed clock boot at an old time and are stepped later by NTP; a
//! bad time source can step them into the future. Every answer of a remote-write receiver or a
//! Pushgateway carries an HTTP `Date`: [`observe_http_date`] compares it with the local wall
//! clock, and the difference (local minus receiver, seconds; the round trip makes it exact to a
//! second or two) is exported as `copilot_edge_clock_skew_seconds`, shown on the status page,
//! and logged once when it goes beyond [`TOLERANCE_SECS`] (`clock_skew_detected`) and once when
//! it is back (`clock_skew_resolved`). Nothing here changes timestamps; it makes a wrong clock
//! visible.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Skew beyond which the clock counts as wrong: well above the round trip and the `Date`
/// header's one-second resolution, well below what breaks a receiver's out-of-order window.
pub const TOLERANCE_SECS: i64 = 120;

/// Local minus receiver, in seconds; `i64::MIN` until a receiver has answered.
static SKEW: AtomicI64 = AtomicI64::new(i64::MIN);
static SKEWED: AtomicBool = AtomicBool::new(false);

/// The last measured skew (local minus receiver, seconds), once a receiver has answered.
pub fn skew_seconds() -> Option<i64> {
    let s = SKEW.load(Ordering::Relaxed);
    (s != i64::MIN).then_some(s)
}

/// Compares an HTTP `Date` value from `source` (a sink's name) with the local clock.
pub fn observe_http_date(source: &str, value: &[u8]) {
    let Some(server) = std::str::from_utf8(value).ok().and_then(parse_http_date) else {
        return;
    };
    let local = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    record(source, local - server);
}

fn record(source: &str, skew: i64) {
    SKEW.store(skew, Ordering::Relaxed);
    let wrong = skew.abs() > TOLERANCE_SECS;
    if SKEWED.swap(wrong, Ordering::Relaxed) != wrong {
        if wrong {
            tracing::warn!(
                skew_seconds = skew,
                source,
                tolerance_secs = TOLERANCE_SECS,
                "clock_skew_detected"
            );
        } else {
            tracing::info!(skew_seconds = skew, source, "clock_skew_resolved");
        }
    }
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110) into Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let mut p = s.trim().split_ascii_whitespace();
    let _weekday = p.next()?;
    let day: u32 = p.next()?.parse().ok()?;
    let month = match p.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i32 = p.next()?.parse().ok()?;
    let mut hms = p.next()?.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if p.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = crate::report::week::Date { year, month, day }.days();
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse_and_malformed_ones_do_not() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Mon, 07 Dec 2026 05:20:00 GMT"),
            Some(1_796_620_800)
        );
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "06 Nov 1994",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }
}
