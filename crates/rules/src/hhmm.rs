//! "HH:MM" times and lists of them (F2, F3).

use crate::time::LocalTime;

/// The most entries `multiScheduledUpdateTime` may list, counted as written (F3).
pub const MAX_SCHEDULED_TIMES: usize = 24;

/// Why an "HH:MM" text or a list of them is rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeListError {
    #[error("\"{0}\" is not a time of day: write H:MM or HH:MM with HH 0-23 and MM 00-59")]
    NotATime(String),
    #[error("entry {index} is empty: only one trailing comma is allowed")]
    EmptyEntry { index: usize },
    #[error("{count} times listed; at most {MAX_SCHEDULED_TIMES} are allowed")]
    TooMany { count: usize },
}

/// Parses one "HH:MM" (F2): one or two ASCII digits, a colon, exactly two ASCII digits,
/// 0 ≤ HH ≤ 23, 0 ≤ MM ≤ 59. No spaces, signs or seconds.
pub fn parse_time(text: &str) -> Result<LocalTime, TimeListError> {
    let not_a_time = || TimeListError::NotATime(text.to_string());
    let (hours, minutes) = text.split_once(':').ok_or_else(not_a_time)?;
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !(1..=2).contains(&hours.len())
        || minutes.len() != 2
        || !all_digits(hours)
        || !all_digits(minutes)
    {
        return Err(not_a_time());
    }
    let hour: u8 = hours.parse().map_err(|_| not_a_time())?;
    let minute: u8 = minutes.parse().map_err(|_| not_a_time())?;
    LocalTime::new(hour, minute).ok_or_else(not_a_time)
}

/// A parsed `multiScheduledUpdateTime` (F3): the distinct times in ascending order, and the
/// times that were written more than once (a warning, not an error).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TimeList {
    pub times: Vec<LocalTime>,
    pub duplicates: Vec<LocalTime>,
}

/// Parses a comma-separated list (F3). An empty string is an empty list ("not set"); one
/// trailing comma is allowed; every other problem is reported, all at once.
pub fn parse_time_list(text: &str) -> Result<TimeList, Vec<TimeListError>> {
    if text.is_empty() {
        return Ok(TimeList::default());
    }
    let body = text.strip_suffix(',').unwrap_or(text);
    let entries: Vec<&str> = body.split(',').collect();
    let mut errors = Vec::new();
    if entries.len() > MAX_SCHEDULED_TIMES {
        errors.push(TimeListError::TooMany {
            count: entries.len(),
        });
    }
    let mut parsed = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        if entry.is_empty() {
            errors.push(TimeListError::EmptyEntry { index });
            continue;
        }
        match parse_time(entry) {
            Ok(time) => parsed.push(time),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    parsed.sort();
    let mut list = TimeList::default();
    for time in parsed {
        if list.times.last() == Some(&time) {
            if list.duplicates.last() != Some(&time) {
                list.duplicates.push(time);
            }
        } else {
            list.times.push(time);
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u8, m: u8) -> LocalTime {
        LocalTime::new(h, m).unwrap()
    }

    #[test]
    fn f2_accepts_one_or_two_digit_hours() {
        assert_eq!(parse_time("8:05"), Ok(t(8, 5)));
        assert_eq!(parse_time("08:05"), Ok(t(8, 5)));
        assert_eq!(parse_time("0:00"), Ok(t(0, 0)));
        assert_eq!(parse_time("23:59"), Ok(t(23, 59)));
    }

    #[test]
    fn f2_rejects_everything_else_naming_the_text() {
        for bad in [
            "10:30:00",
            "24:00",
            "aa:bb",
            " 8:05",
            "8:5",
            "123:00",
            "12:60",
            "",
            ":",
            "12:",
            "+1:00",
            "١٢:٠٠",
            "12:00 ",
            "012:00",
        ] {
            assert_eq!(
                parse_time(bad),
                Err(TimeListError::NotATime(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn f3_trailing_comma_allowed_once() {
        let list = parse_time_list("11:30,16:30,").unwrap();
        assert_eq!(list.times, vec![t(11, 30), t(16, 30)]);
        assert!(parse_time_list("11:30,,").is_err());
        assert!(parse_time_list(",11:30").is_err());
        assert!(parse_time_list(",").is_err());
    }

    #[test]
    fn f3_empty_string_is_not_set() {
        assert_eq!(parse_time_list(""), Ok(TimeList::default()));
    }

    #[test]
    fn f3_duplicates_fire_once_and_are_reported() {
        let list = parse_time_list("10:00,9:00,10:00,10:00").unwrap();
        assert_eq!(list.times, vec![t(9, 0), t(10, 0)]);
        assert_eq!(list.duplicates, vec![t(10, 0)]);
    }

    #[test]
    fn f3_more_than_24_entries_counted_as_written() {
        let ok = vec!["10:00"; 24].join(",");
        assert!(parse_time_list(&ok).is_ok());
        let too_many = vec!["10:00"; 25].join(",");
        assert_eq!(
            parse_time_list(&too_many),
            Err(vec![TimeListError::TooMany { count: 25 }])
        );
    }

    #[test]
    fn f3_reports_every_bad_entry() {
        let errors = parse_time_list("10:00,25:00,,x").unwrap_err();
        assert_eq!(errors.len(), 3);
    }
}
