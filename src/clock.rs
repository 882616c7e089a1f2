//! The gateway's wall clock against its receivers'.
//!
//! Gateways without a battery-backed clock boot at an old time and are stepped later by NTP; a
//! bad time source can step them into the future. Every answer of a remote-write receiver or a
//! Pushgateway carries an HTTP `Date`: [`observe_http_date`] compares it with the local wall
//! clock, and the difference (local minus receiver, seconds; the round trip makes it exact to a
//! second or two) is exported as `copilot_edge_clock_skew_seconds`, shown on the status page,
//! and logged once when it goes beyond [`TOLERANCE_SECS`] (`clock_skew_detected`) and once when
//! it is back (`clock_skew_resolved`).
//!
//! [`RecordClock`] stamps spool records with that knowledge; the rule is documented on it.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Skew beyond which the clock counts as wrong: well above the round trip and the `Date`
/// header's one-second resolution, well below what breaks a receiver's out-of-order window.
pub const TOLERANCE_SECS: i64 = 120;

/// Local minus receiver, in seconds; `i64::MIN` until a receiver has answered.
static SKEW: AtomicI64 = AtomicI64::new(i64::MIN);
static SKEWED: AtomicBool = AtomicBool::new(false);
/// When the skew was measured: (local wall ms, monotonic instant). A step of the wall clock after
/// it makes the measurement stale.
static MEASURED: Mutex<Option<(i64, Instant)>> = Mutex::new(None);

/// A wall clock that moved this much more or less than the monotonic clock since the skew was
/// measured has been stepped, and the measurement no longer holds.
const STEP_MS: i64 = 5_000;

/// Unix time in ms by the wall clock (0 before 1970). Everything that stamps or compares wall
/// times reads it here.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The civil date `(year, month 1..=12, day 1..=31)` of `days` since 1970-01-01, proleptic
/// Gregorian (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The receivers' clock minus ours is known and still holds (no step since it was measured):
/// local minus receiver, in ms. `None` before any receiver answered or after a step.
pub fn fresh_skew_ms() -> Option<i64> {
    let skew = skew_seconds()?;
    let (wall_at, mono_at) = (*MEASURED.lock().unwrap_or_else(|e| e.into_inner()))?;
    let drift = (now_ms() - wall_at) - mono_at.elapsed().as_millis() as i64;
    (drift.abs() <= STEP_MS).then_some(skew * 1000)
}

/// A skew was measured, but the wall clock has stepped since: a receiver should be asked again
/// before anything is sent on the old measurement.
pub fn skew_is_stale() -> bool {
    skew_seconds().is_some() && fresh_skew_ms().is_none()
}

/// The receivers' time now, in ms, when a fresh measurement gives it.
pub fn receiver_now_ms() -> Option<i64> {
    fresh_skew_ms().map(|s| now_ms() - s)
}

/// The receivers' time minus the boot clock, when a fresh measurement gives it: the offset every
/// record's true time follows ([`Timeline::true_ts`]).
pub fn true_offset_ms() -> Option<i64> {
    receiver_now_ms().map(|t| t - boot_ms())
}

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
    *MEASURED.lock().unwrap_or_else(|e| e.into_inner()) = Some((now_ms(), Instant::now()));
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

/// Timestamps of spool records, one per process (the spool holds it under its lock).
///
/// The rule, for a wall-clock reading `wall`:
/// 1. With a fresh receiver measurement showing a skew beyond [`TOLERANCE_SECS`], the record is
///    stamped with the receivers' time (`wall` minus the skew): a gateway booted at 2020 or stepped
///    a day ahead sends what its receivers can store.
/// 2. A stamp never goes below the previous one: after a backward step the records carry the
///    previous stamp plus the monotonic time elapsed since it (so spacing stays true and a counter
///    never seems to reset), logged once per step as `clock_stepped_back`.
/// 3. Except when a fresh receiver measurement vouches that the new time is right and the
///    previous stamps were ahead of it beyond the tolerance (the clock had been stepped into the
///    future and is now corrected): then the stamps return to the right time once, logged as
///    `record_clock_reset`, rather than staying in the future.
///
/// Every step of the wall clock against the monotonic clock between two records (more than
/// 5 s either way) is logged as `clock_stepped` with its size.
pub struct RecordClock {
    last_ms: i64,
    last_at: Instant,
    last_wall: Option<i64>,
    carrying: bool,
}

impl Default for RecordClock {
    fn default() -> Self {
        RecordClock {
            last_ms: i64::MIN,
            last_at: Instant::now(),
            last_wall: None,
            carrying: false,
        }
    }
}

impl RecordClock {
    /// The stamp of a record appended now, when the wall clock reads `wall`.
    pub fn stamp(&mut self, wall: i64) -> i64 {
        self.stamp_with(wall, fresh_skew_ms())
    }

    fn stamp_with(&mut self, wall: i64, fresh_skew: Option<i64>) -> i64 {
        let tolerance = TOLERANCE_SECS * 1000;
        if let Some(prev) = self.last_wall {
            let step = (wall - prev) - self.last_at.elapsed().as_millis() as i64;
            if step.abs() > STEP_MS {
                tracing::warn!(step_ms = step, wall_ms = wall, "clock_stepped");
            }
        }
        self.last_wall = Some(wall);
        let corrected = match fresh_skew {
            Some(s) if s.abs() > tolerance => wall - s,
            _ => wall,
        };
        let ts = if corrected >= self.last_ms {
            if self.carrying {
                self.carrying = false;
                tracing::info!(ts_ms = corrected, "clock_caught_up");
            }
            corrected
        } else if fresh_skew.is_some() && self.last_ms - corrected > tolerance {
            tracing::warn!(
                from_ms = self.last_ms,
                to_ms = corrected,
                "record_clock_reset"
            );
            self.carrying = false;
            corrected
        } else {
            let carried = self
                .last_ms
                .saturating_add(self.last_at.elapsed().as_millis() as i64);
            if !self.carrying {
                self.carrying = true;
                tracing::warn!(
                    step_ms = corrected - carried,
                    wall_ms = wall,
                    ts_ms = carried,
                    "clock_stepped_back"
                );
            }
            carried
        };
        self.last_ms = ts;
        self.last_at = Instant::now();
        ts
    }
}

/// Milliseconds of `CLOCK_BOOTTIME`: never stepped, counts suspend, and is the same clock for
/// every process of one boot (so `copilot-edge spool status` can age what the service wrote).
#[allow(clippy::unnecessary_cast)] // time_t and c_long are not i64 on every target
pub fn boot_ms() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for clock_gettime to fill.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) };
    if r != 0 {
        return 0;
    }
    t.tv_sec as i64 * 1000 + t.tv_nsec as i64 / 1_000_000
}

/// The moment the boot clock read `boot_at_ms`, in today's wall clock: what the wall clock read
/// then had it never been stepped since.
pub fn wall_of_boot_ms(boot_at_ms: i64) -> i64 {
    now_ms() - (boot_ms() - boot_at_ms).max(0)
}

/// Ages of spool records from the boot clock, not the wall clock, and their true times.
///
/// A record carries one stamp (wall-clock based, see [`RecordClock`]). Between two steps of the
/// wall clock, `stamp - boot_ms()` is the same for every record; a step changes it. The
/// timeline keeps that offset with the first sequence number it holds from, so a record's age
/// is `boot now - (stamp - offset)` whatever the wall clock did since: a backlog recorded at
/// 2020 before NTP stepped the clock reads its true age, not seven years. Records recovered from
/// an earlier run take the offset of the wall clock at open (their age is the wall clock's).
///
/// The same offsets give a record's true time once a receiver has vouched for the clock
/// ([`Timeline::true_ts`]): a record stamped under an offset that differs from the true one by
/// more than [`TOLERANCE_SECS`] (a clock that was wrong, then stepped) is re-stamped by that
/// difference when it is read for sending. Records of an earlier run are never re-stamped (the
/// boot clock of another run says nothing about them).
#[derive(Debug)]
pub struct Timeline {
    marks: Vec<(u64, i64)>,
}

/// Marks kept: one per step, so this is only reached by a clock that steps all the time.
const MAX_MARKS: usize = 64;

impl Timeline {
    /// The timeline of a process whose first own record will be `first_seq`.
    pub fn new(first_seq: u64) -> Self {
        Timeline {
            marks: vec![(first_seq, now_ms() - boot_ms())],
        }
    }

    /// The true time of the record `seq` stamped `ts_ms`, given the true offset of the wall
    /// clock against the boot clock now (`true_offset`: the receivers' time minus
    /// [`boot_ms`], known only from a fresh receiver measurement). Unchanged when the record's
    /// stamp was right within the tolerance, came from an earlier run, or nothing vouches for
    /// the time now.
    pub fn true_ts(&self, seq: u64, ts_ms: i64, true_offset: Option<i64>) -> i64 {
        let Some(truth) = true_offset else {
            return ts_ms;
        };
        match self.marks.iter().rev().find(|m| m.0 <= seq) {
            Some(&(_, offset)) if (truth - offset).abs() > TOLERANCE_SECS * 1000 => {
                ts_ms + (truth - offset)
            }
            _ => ts_ms,
        }
    }

    /// Records from `first_seq` on were appended when their clock read `clock_now_ms` (the
    /// wall clock as the record clock corrects it; a record may carry an earlier time).
    pub fn note(&mut self, first_seq: u64, clock_now_ms: i64) {
        self.note_at(first_seq, clock_now_ms, boot_ms());
    }

    fn note_at(&mut self, first_seq: u64, ts_ms: i64, boot: i64) {
        let offset = ts_ms - boot;
        let last = self.marks.last().map_or(i64::MIN, |m| m.1);
        if last == i64::MIN || (offset - last).abs() > STEP_MS {
            if self.marks.len() >= MAX_MARKS {
                self.marks.remove(1);
            }
            self.marks.push((first_seq, offset));
        }
    }

    /// Age in ms of the record `seq` stamped `ts_ms`.
    pub fn age_ms(&self, seq: u64, ts_ms: i64) -> i64 {
        self.age_at(seq, ts_ms, boot_ms())
    }

    fn age_at(&self, seq: u64, ts_ms: i64, boot: i64) -> i64 {
        let offset = self
            .marks
            .iter()
            .rev()
            .find(|m| m.0 <= seq)
            .or(self.marks.first())
            .map_or(0, |m| m.1);
        (boot - (ts_ms - offset)).max(0)
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
    let days = days_from_civil(i64::from(year), month, day);
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(days_from_civil(2026, 12, 7), 20_794);
        for d in (-800_000..800_000).step_by(997) {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    #[test]
    fn records_stamped_under_a_wrong_clock_get_their_true_time() {
        let day = 86_400_000_i64;
        // This run's records from 100; booted with the wall clock 7 years behind (offset w).
        let w = 1_000;
        let mut t = Timeline {
            marks: vec![(100, w)],
        };
        // Records 100..=109 stamped at boot 10 s; NTP steps the clock 7 years forward.
        t.note_at(110, 10_000 + w + 7 * 365 * day, 10_000);
        let truth = Some(w + 7 * 365 * day);
        // Record 105 (stamped w + 8 s) is re-stamped by the step; 110 is right; 99 is of an
        // earlier run and stays; without a receiver's word nothing moves.
        assert_eq!(t.true_ts(105, w + 8_000, truth), w + 8_000 + 7 * 365 * day);
        assert_eq!(
            t.true_ts(110, 10_000 + w + 7 * 365 * day, truth),
            10_000 + w + 7 * 365 * day
        );
        assert_eq!(t.true_ts(99, 5, truth), 5);
        assert_eq!(t.true_ts(105, w + 8_000, None), w + 8_000);
        // Drift within the tolerance is left alone.
        assert_eq!(t.true_ts(105, w + 8_000, Some(w + 60_000)), w + 8_000);
        // A day ahead before the receiver answered: brought back.
        let mut t = Timeline {
            marks: vec![(1, 0)],
        };
        t.note_at(5, day + 500, 500);
        assert_eq!(t.true_ts(6, day + 600, Some(0)), 600);
    }

    #[test]
    fn record_ages_follow_the_boot_clock_across_steps() {
        let year = 365 * 86_400_000_i64;
        let mut t = Timeline {
            marks: vec![(0, 1_000)],
        };
        // Records 1..=10 stamped at "2020" (wall = boot + 1 s), boot clock at 10 s.
        t.note_at(1, 11_000, 10_000);
        // NTP steps the wall clock forward by years; record 11 is stamped at the new time.
        t.note_at(11, 11_500 + 7 * year, 10_500);
        assert_eq!(t.marks.len(), 2);
        // 60 s later on the boot clock: record 1 is 60 s old, not seven years.
        assert_eq!(t.age_at(1, 11_000, 70_000), 60_000);
        assert_eq!(t.age_at(11, 11_500 + 7 * year, 70_000), 59_500);
        // Ordinary drift below the step size adds no mark.
        t.note_at(12, 12_000 + 7 * year + 40, 11_000);
        assert_eq!(t.marks.len(), 2);
        // Bounded however often the clock steps.
        for i in 0..200 {
            t.note_at(100 + i, i as i64 * 60_000, 20_000);
        }
        assert!(t.marks.len() <= MAX_MARKS);
        assert_eq!(t.marks[0], (0, 1_000));
    }

    #[test]
    fn record_stamps_never_go_back_unless_a_receiver_vouches() {
        let mut c = RecordClock::default();
        assert_eq!(c.stamp_with(1_000_000, None), 1_000_000);
        // A 1 h step back without a receiver: carried forward from the last stamp.
        let t = c.stamp_with(1_000_000 - 3_600_000, None);
        assert!((1_000_000..1_000_000 + 1_000).contains(&t), "{t}");
        let t2 = c.stamp_with(1_000_100 - 3_600_000, None);
        assert!(t2 >= t);
        // A receiver says we are an hour behind: corrected time, no going back.
        let t3 = c.stamp_with(1_000_200 - 3_600_000, Some(-3_600_000));
        assert_eq!(t3, 1_000_200.max(t2));
        // Booted at 2020: the receivers' time from the first measurement on.
        let mut c = RecordClock::default();
        assert_eq!(
            c.stamp_with(1_577_836_800_000, Some(-219_000_000_000)),
            1_577_836_800_000 + 219_000_000_000
        );
        // A day ahead, then corrected: stamps come back to the right time once.
        let mut c = RecordClock::default();
        let day = 86_400_000;
        assert_eq!(c.stamp_with(5 * day, None), 5 * day);
        assert_eq!(c.stamp_with(4 * day + 10, Some(0)), 4 * day + 10);
        // Small jitter below the last stamp is carried, not reset.
        let last = c.stamp_with(4 * day + 20, Some(0));
        let jitter = c.stamp_with(last - 50, Some(0));
        assert!(jitter >= last);
    }

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
