//! Calendar arithmetic for the report: the reporting week (Monday 00:00 UTC to the next Monday),
//! parsing `--week-of`, and UTC timestamps for display. Pure; no clock is read here (callers pass
//! "now"), so every rule is unit-tested with fixed dates.
//!
//! Days are counted from 1970-01-01 with Howard Hinnant's `days_from_civil` algorithm, valid for
//! the proleptic Gregorian calendar; Unix time has no leap seconds, so a day is 86 400 s.

use std::fmt;

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// Seconds in a week.
pub const WEEK: i64 = 7 * DAY;

/// A calendar date (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Year (proleptic Gregorian).
    pub year: i32,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
}

impl Date {
    /// Parses `YYYY-MM-DD` strictly (four-digit year, real month and day).
    pub fn parse(s: &str) -> Result<Date, String> {
        let b = s.as_bytes();
        let shape_ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape_ok {
            return Err("expected YYYY-MM-DD".to_string());
        }
        // The shape check above guarantees ASCII digits, so these parses cannot fail.
        let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
        let (year, month, day) = (num(0..4) as i32, num(5..7), num(8..10));
        if !(1..=12).contains(&month) {
            return Err(format!("month {month} is not 1..12"));
        }
        let max = days_in_month(year, month);
        if day == 0 || day > max {
            return Err(format!("day {day} is not 1..{max} for {year}-{month:02}"));
        }
        Ok(Date { year, month, day })
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        crate::clock::days_from_civil(i64::from(self.year), self.month, self.day)
    }

    /// The date `days` days after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        let (year, month, day) = crate::clock::civil_from_days(days);
        Date {
            year: year as i32,
            month,
            day,
        }
    }

    /// 0 = Monday .. 6 = Sunday.
    pub fn weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (index 3).
        (self.days() + 3).rem_euclid(7) as u32
    }

    /// Short English weekday name.
    pub fn weekday_name(self) -> &'static str {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][self.weekday() as usize]
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// A reporting week: `[start, end)` in Unix seconds, `end - start` = 7 days, `start` a Monday
/// 00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Week {
    /// Monday 00:00 UTC, Unix seconds.
    pub start: i64,
    /// The next Monday 00:00 UTC (exclusive), Unix seconds.
    pub end: i64,
}

impl Week {
    /// The week (Monday to Monday) containing `date`.
    pub fn containing(date: Date) -> Week {
        let d = date.days();
        let monday = d - i64::from(date.weekday());
        debug_assert_eq!((monday + 3).rem_euclid(7), 0);
        Week {
            start: monday * DAY,
            end: monday * DAY + WEEK,
        }
    }

    /// The last week that has fully ended at Unix time `now`.
    pub fn last_complete(now: i64) -> Week {
        let this = Week::containing(Date::from_days(now.div_euclid(DAY)));
        Week {
            start: this.start - WEEK,
            end: this.start,
        }
    }

    /// The Monday the week starts on.
    pub fn monday(&self) -> Date {
        Date::from_days(self.start.div_euclid(DAY))
    }

    /// Start of each of the 7 days.
    pub fn day_starts(&self) -> impl Iterator<Item = i64> + '_ {
        (0..7).map(move |i| self.start + i * DAY)
    }
}

impl fmt::Display for Week {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the week of {}", self.monday())
    }
}

/// `YYYY-MM-DD HH:MM` (UTC) of a Unix time.
pub fn datetime(ts: i64) -> String {
    let d = Date::from_days(ts.div_euclid(DAY));
    let s = ts.rem_euclid(DAY);
    format!("{d} {:02}:{:02}", s / 3600, s % 3600 / 60)
}

/// `HH:MM` (UTC) of a Unix time.
pub fn clock(ts: i64) -> String {
    let s = ts.rem_euclid(DAY);
    format!("{:02}:{:02}", s / 3600, s % 3600 / 60)
}

/// RFC 3339 (`2026-11-09T00:00:00Z`) of a Unix time, for messages.
pub fn rfc3339(ts: i64) -> String {
    let d = Date::from_days(ts.div_euclid(DAY));
    let s = ts.rem_euclid(DAY);
    format!("{d}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_real_dates_only() {
        let ok = [
            ("2026-11-09", (2026, 11, 9)),
            ("2024-02-29", (2024, 2, 29)),
            ("2000-02-29", (2000, 2, 29)),
        ];
        for (s, (y, m, d)) in ok {
            assert_eq!(
                Date::parse(s),
                Ok(Date {
                    year: y,
                    month: m,
                    day: d
                }),
                "{s}"
            );
        }
        for bad in [
            "2026-1-09",
            "2026/11/09",
            "2026-13-01",
            "2026-00-10",
            "2026-11-31",
            "2023-02-29",
            "1900-02-29",
            "2026-11-09T00",
            "",
            "abcd-ef-gh",
            "+026-11-09",
        ] {
            assert!(Date::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn days_round_trip_and_known_values() {
        let known = [
            ("1970-01-01", 0),
            ("2000-03-01", 11_017),
            ("2026-11-09", 20_766),
            ("1969-12-31", -1),
        ];
        for (s, days) in known {
            let d = Date::parse(s).unwrap();
            assert_eq!(d.days(), days, "{s}");
            assert_eq!(Date::from_days(days), d);
        }
        for days in (-800_000..800_000).step_by(997) {
            assert_eq!(Date::from_days(days).days(), days);
        }
    }

    #[test]
    fn weekdays_from_dates_across_leap_years() {
        let cases = [
            ("1970-01-01", "Thu"),
            ("2026-11-09", "Mon"),
            ("2026-11-15", "Sun"),
            ("2024-02-29", "Thu"),
        ];
        for (s, name) in cases {
            assert_eq!(Date::parse(s).unwrap().weekday_name(), name, "{s}");
        }
    }

    #[test]
    fn week_containing_any_day_starts_on_monday() {
        let monday = Date::parse("2026-11-09").unwrap();
        for offset in 0..7 {
            let w = Week::containing(Date::from_days(monday.days() + offset));
            assert_eq!(w.monday(), monday, "offset {offset}");
            assert_eq!(w.start, 1_794_182_400);
            assert_eq!(w.end - w.start, WEEK);
        }
        // A week across a year boundary.
        let w = Week::containing(Date::parse("2027-01-01").unwrap());
        assert_eq!(w.monday().to_string(), "2026-12-28");
    }

    #[test]
    fn last_complete_week() {
        let cases = [
            // Thursday 2026-11-26 22:00 → the week of 2026-11-16.
            (
                Date::parse("2026-11-26").unwrap().days() * DAY + 22 * 3600,
                "2026-11-16",
            ),
            // Exactly Monday 00:00: the week that just ended.
            (
                Date::parse("2026-11-23").unwrap().days() * DAY,
                "2026-11-16",
            ),
            // Sunday 23:59:59: the week before the current one.
            (
                Date::parse("2026-11-22").unwrap().days() * DAY + DAY - 1,
                "2026-11-09",
            ),
        ];
        for (now, monday) in cases {
            let w = Week::last_complete(now);
            assert_eq!(w.monday().to_string(), monday, "now {}", rfc3339(now));
            assert!(w.end <= now);
        }
    }

    #[test]
    fn times_format_as_date_clock_and_rfc3339() {
        let t = Date::parse("2026-11-11").unwrap().days() * DAY + 14 * 3600 + 5 * 60 + 7;
        assert_eq!(datetime(t), "2026-11-11 14:05");
        assert_eq!(clock(t), "14:05");
        assert_eq!(rfc3339(t), "2026-11-11T14:05:07Z");
        assert_eq!(
            Week::containing(Date::parse("2026-11-11").unwrap()).to_string(),
            "the week of 2026-11-09"
        );
    }
}
