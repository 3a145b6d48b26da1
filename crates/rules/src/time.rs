//! Instants and local time (rules T1–T3).
//!
//! The core stores every instant as milliseconds since the Unix epoch in UTC ([`Instant`]):
//! eight bytes, totally ordered, cheap to compare on the hot path. Local dates and wall-clock
//! times only exist at the edges of a decision ("what is the next 10:30 in this zone?"), and
//! those questions are answered by jiff against a bundled time-zone database.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::fmt;

/// Milliseconds in one minute; durations in the rules are whole minutes or seconds.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;

/// An instant in UTC, in milliseconds since the Unix epoch (T1: instants are stored in UTC).
///
/// Arithmetic saturates, so no input can make the core overflow or panic.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Instant(i64);

impl Instant {
    /// The instant `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant moved by `ms` milliseconds (saturating).
    pub const fn plus_millis(self, ms: i64) -> Self {
        Instant(self.0.saturating_add(ms))
    }

    /// This instant moved by whole minutes (saturating).
    pub const fn plus_minutes(self, minutes: i64) -> Self {
        self.plus_millis(minutes.saturating_mul(MINUTE_MS))
    }

    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later; saturating).
    pub const fn millis_since(self, earlier: Instant) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The same instant as a jiff timestamp, or `None` outside jiff's supported range.
    pub fn to_timestamp(self) -> Option<Timestamp> {
        Timestamp::from_millisecond(self.0).ok()
    }

    /// The instant of a jiff timestamp, truncated to the millisecond.
    pub fn from_timestamp(ts: Timestamp) -> Self {
        Instant(ts.as_millisecond())
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_timestamp() {
            Some(ts) => write!(f, "{ts}"),
            None => write!(f, "Instant({}ms)", self.0),
        }
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A wall-clock time of day to the minute ("HH:MM", F2), stored as minutes after midnight.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u16", into = "u16")]
pub struct LocalTime(u16);

impl TryFrom<u16> for LocalTime {
    type Error = String;
    fn try_from(minutes: u16) -> Result<Self, String> {
        if minutes < 24 * 60 {
            Ok(LocalTime(minutes))
        } else {
            Err(format!("{minutes} is not a minute of the day"))
        }
    }
}

impl From<LocalTime> for u16 {
    fn from(time: LocalTime) -> u16 {
        time.0
    }
}

impl LocalTime {
    /// `hour` 0..=23 and `minute` 0..=59, else `None`.
    pub const fn new(hour: u8, minute: u8) -> Option<Self> {
        if hour <= 23 && minute <= 59 {
            Some(LocalTime(hour as u16 * 60 + minute as u16))
        } else {
            None
        }
    }

    /// Minutes after midnight (0..1440).
    pub const fn minutes_after_midnight(self) -> u16 {
        self.0
    }

    pub const fn hour(self) -> u8 {
        (self.0 / 60) as u8
    }

    pub const fn minute(self) -> u8 {
        (self.0 % 60) as u8
    }

    fn to_civil(self) -> Time {
        Time::constant(self.hour() as i8, self.minute() as i8, 0, 0)
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour(), self.minute())
    }
}

/// The local date of `instant` in `zone` (T1). `None` only outside jiff's range.
pub fn local_date(instant: Instant, zone: &TimeZone) -> Option<Date> {
    Some(zone.to_datetime(instant.to_timestamp()?).date())
}

/// The instant of a local date-time in `zone`, resolved per T2: a time in a gap moves
/// forward by the gap's length, a time in a fold takes the earlier instant.
pub fn resolve_local(datetime: DateTime, zone: &TimeZone) -> Option<Instant> {
    let ts = zone.to_ambiguous_timestamp(datetime).compatible().ok()?;
    Some(Instant::from_timestamp(ts))
}

/// The instant `time` falls on at local `date` in `zone` (T2).
pub fn resolve_local_time(date: Date, time: LocalTime, zone: &TimeZone) -> Option<Instant> {
    resolve_local(date.to_datetime(time.to_civil()), zone)
}

/// The first instant of local `date` in `zone` (T3): 00:00, or the end of a gap that
/// swallows midnight.
pub fn start_of_day(date: Date, zone: &TimeZone) -> Option<Instant> {
    let zoned = date.to_zoned(zone.clone()).ok()?;
    let start = zoned.start_of_day().ok()?;
    Some(Instant::from_timestamp(start.timestamp()))
}

/// The first instant of the local day after the one containing `instant` (the next
/// midnight reset, F17).
pub fn next_local_midnight(instant: Instant, zone: &TimeZone) -> Option<Instant> {
    let today = local_date(instant, zone)?;
    start_of_day(today.tomorrow().ok()?, zone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).expect("bundled zone")
    }

    fn utc(text: &str) -> Instant {
        Instant::from_timestamp(text.parse().unwrap())
    }

    #[test]
    fn t2_gap_moves_forward_by_gap_length_new_york() {
        // 2026-03-08: 02:00 → 03:00 in America/New_York.
        let at = resolve_local_time(
            date(2026, 3, 8),
            LocalTime::new(2, 30).unwrap(),
            &zone("America/New_York"),
        );
        assert_eq!(at, Some(utc("2026-03-08T07:30:00Z"))); // 03:30 EDT
    }

    #[test]
    fn t2_fold_takes_earlier_instant_berlin() {
        // 2026-10-25: 03:00 CEST → 02:00 CET; 02:30 happens twice.
        let at = resolve_local_time(
            date(2026, 10, 25),
            LocalTime::new(2, 30).unwrap(),
            &zone("Europe/Berlin"),
        );
        assert_eq!(at, Some(utc("2026-10-25T00:30:00Z"))); // first 02:30, CEST
    }

    #[test]
    fn t3_day_starts_at_end_of_gap_when_midnight_is_skipped_santiago() {
        // 2026-09-06: Chile skips 00:00 → 01:00.
        let start = start_of_day(date(2026, 9, 6), &zone("America/Santiago"));
        assert_eq!(start, Some(utc("2026-09-06T04:00:00Z"))); // 01:00 -03
    }

    #[test]
    fn t2_lord_howe_half_hour_gap() {
        // 2026-10-04: Lord Howe moves 02:00 → 02:30.
        let at = resolve_local_time(
            date(2026, 10, 4),
            LocalTime::new(2, 15).unwrap(),
            &zone("Australia/Lord_Howe"),
        );
        // 02:15 is in the gap; forward by 30 minutes → 02:45 +11:00.
        assert_eq!(at, Some(utc("2026-10-03T15:45:00Z")));
    }

    #[test]
    fn t1_local_date_follows_zone() {
        let instant = utc("2026-03-01T17:00:00Z");
        assert_eq!(
            local_date(instant, &zone("Asia/Shanghai")),
            Some(date(2026, 3, 2))
        );
        assert_eq!(local_date(instant, &TimeZone::UTC), Some(date(2026, 3, 1)));
    }

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        assert_eq!(
            Instant::from_millis(i64::MAX).plus_minutes(5).as_millis(),
            i64::MAX
        );
        assert_eq!(
            Instant::from_millis(i64::MIN).millis_since(Instant::from_millis(1)),
            i64::MIN
        );
        assert_eq!(Instant::from_millis(i64::MAX).to_timestamp(), None);
    }
}
