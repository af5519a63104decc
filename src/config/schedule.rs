//! Schedules: when a camera is watched, as days and times of day in the site's time zone.
//!
//! Each entry is `"[DAYS] HH:MM-HH:MM"`: `"Mon-Fri 21:00-07:00"`, `"Sat,Sun 00:00-24:00"`,
//! `"22:00-06:00"` (every day). A range that ends before it starts runs past midnight and
//! belongs to the day it starts on, so `"Fri 21:00-07:00"` covers Saturday until seven. The
//! schedule is the union of its entries; an empty schedule means always.

use std::fmt;
use std::time::SystemTime;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_PER_DAY: u16 = 24 * 60;
const EXAMPLE: &str = "\"Mon-Fri 21:00-07:00\"";

/// A parsed `schedule`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Bit `d` set for day `d`, Monday being 0.
    days: u8,
    /// Minutes after midnight, start inclusive.
    start: u16,
    /// Minutes after midnight, end exclusive; at most `start` when the range runs past midnight.
    end: u16,
}

impl Schedule {
    /// Parses the entries of a `schedule` list.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Schedule, String> {
        let entries = entries
            .into_iter()
            .map(Entry::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule { entries })
    }

    /// Whether the schedule is "always".
    pub fn is_always(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether day `weekday` (Monday 0) at `minute` after midnight is inside the schedule.
    pub fn contains(&self, weekday: u8, minute: u16) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        let yesterday = (weekday + 6) % 7;
        self.entries.iter().any(|e| {
            let on = |day: u8| e.days & (1 << day) != 0;
            if e.start < e.end {
                on(weekday) && (e.start..e.end).contains(&minute)
            } else {
                (on(weekday) && minute >= e.start) || (on(yesterday) && minute < e.end)
            }
        })
    }

    /// Whether instant `at` is inside the schedule, read on the clock of `zone`.
    pub fn active_at(&self, at: SystemTime, zone: &jiff::tz::TimeZone) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        let Ok(timestamp) = jiff::Timestamp::try_from(at) else {
            // Outside jiff's range (before year -9999): no schedule was meant for it.
            return false;
        };
        let local = timestamp.to_zoned(zone.clone());
        let weekday = local.weekday().to_monday_zero_offset() as u8;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        self.contains(weekday, minute)
    }
}

impl Entry {
    fn parse(text: &str) -> Result<Entry, String> {
        let bad = |why: &str| format!("\"{text}\": {why}; expected entries like {EXAMPLE}");
        let mut words = text.split_whitespace();
        let (days, times) = match (words.next(), words.next(), words.next()) {
            (Some(times), None, None) => ("daily", times),
            (Some(days), Some(times), None) => (days, times),
            _ => return Err(bad("expected days and a time range")),
        };
        let days = parse_days(days).map_err(|why| bad(&why))?;
        let (start, end) = times
            .split_once('-')
            .ok_or_else(|| bad("expected a time range HH:MM-HH:MM"))?;
        let start = parse_time(start).map_err(|why| bad(&why))?;
        let end = parse_time(end).map_err(|why| bad(&why))?;
        if start == MINUTES_PER_DAY {
            return Err(bad("a range cannot start at 24:00"));
        }
        if start == end {
            return Err(bad("the range is empty; for a whole day write 00:00-24:00"));
        }
        Ok(Entry {
            days,
            start,
            end: if end == MINUTES_PER_DAY && start == 0 {
                MINUTES_PER_DAY
            } else {
                end % MINUTES_PER_DAY
            },
        })
    }
}

fn parse_days(text: &str) -> Result<u8, String> {
    let lower = text.to_ascii_lowercase();
    if matches!(lower.as_str(), "daily" | "*") {
        return Ok(0x7f);
    }
    let day = |name: &str| {
        DAY_NAMES
            .iter()
            .position(|d| name.len() >= 3 && weekday_name(d).starts_with(name))
            .map(|d| d as u8)
            .ok_or_else(|| format!("unknown day \"{name}\" (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
    };
    let mut days = 0u8;
    for part in lower.split(',') {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (day(first)?, day(last)?);
                let mut d = first;
                loop {
                    days |= 1 << d;
                    if d == last {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days |= 1 << day(part)?,
        }
    }
    Ok(days)
}

/// The full English name of a three-letter day, so that "monday" and "mon" both match.
fn weekday_name(short: &str) -> &'static str {
    match short {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

fn parse_time(text: &str) -> Result<u16, String> {
    let (hours, minutes) = text
        .split_once(':')
        .ok_or_else(|| format!("expected a time like 21:00, found \"{text}\""))?;
    let hours: u16 = hours
        .parse()
        .map_err(|_| format!("expected a time like 21:00, found \"{text}\""))?;
    let minutes: u16 = minutes
        .parse()
        .map_err(|_| format!("expected a time like 21:00, found \"{text}\""))?;
    if minutes >= 60 || hours > 24 || (hours == 24 && minutes != 0) {
        return Err(format!("\"{text}\" is not a time of day"));
    }
    Ok(hours * 60 + minutes)
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Schedule;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of entries like [{EXAMPLE}]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Schedule, E> {
                Schedule::parse([v]).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Schedule, A::Error> {
                let mut texts: Vec<String> = Vec::new();
                while let Some(text) = seq.next_element::<String>()? {
                    texts.push(text);
                }
                Schedule::parse(texts.iter().map(String::as_str)).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The site's time zone: an IANA name such as `"America/Chicago"`, or the system's.
pub fn time_zone(name: Option<&str>) -> Result<jiff::tz::TimeZone, String> {
    match name {
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
            format!("unknown time zone \"{name}\": expected an IANA name like \"America/Chicago\" (see /usr/share/zoneinfo)")
        }),
        None => Ok(jiff::tz::TimeZone::system()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MON: u8 = 0;
    const FRI: u8 = 4;
    const SAT: u8 = 5;
    const SUN: u8 = 6;

    fn at(h: u16, m: u16) -> u16 {
        h * 60 + m
    }

    #[test]
    fn an_overnight_range_belongs_to_the_day_it_starts() {
        let s = Schedule::parse(["Mon-Fri 21:00-07:00"]).unwrap();
        assert!(s.contains(MON, at(21, 0)));
        assert!(!s.contains(MON, at(20, 59)));
        assert!(
            s.contains(SAT, at(6, 59)),
            "Friday night runs into Saturday"
        );
        assert!(!s.contains(SAT, at(7, 0)));
        assert!(!s.contains(SAT, at(21, 0)));
        assert!(!s.contains(MON, at(6, 0)), "Sunday night is not scheduled");
        assert!(s.contains(FRI, at(23, 59)));
    }

    #[test]
    fn whole_days_lists_and_every_day() {
        let s = Schedule::parse(["Sat,Sun 00:00-24:00", "12:00-13:00"]).unwrap();
        assert!(s.contains(SAT, 0) && s.contains(SUN, at(23, 59)));
        assert!(s.contains(MON, at(12, 30)) && !s.contains(MON, at(13, 0)));
        let wrap = Schedule::parse(["Fri-Mon 08:00-09:00"]).unwrap();
        assert!(wrap.contains(SUN, at(8, 0)) && wrap.contains(MON, at(8, 0)));
        assert!(!wrap.contains(2, at(8, 0)));
        assert!(Schedule::default().contains(MON, 0));
        assert!(
            Schedule::parse(["monday 10:00-11:00"])
                .unwrap()
                .contains(MON, at(10, 0))
        );
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (text, says) in [
            ("Mon-Fri 21:00", "time range"),
            ("Mon-Fry 21:00-07:00", "unknown day \"fry\""),
            ("Mon 25:00-07:00", "not a time of day"),
            ("Mon 07:00-07:00", "empty"),
            ("nine to five", "expected"),
        ] {
            let error = Schedule::parse([text]).unwrap_err();
            assert!(
                error.contains(says) && error.contains(text),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn instants_are_read_in_the_site_time_zone() {
        let s = Schedule::parse(["Mon-Fri 21:00-07:00"]).unwrap();
        // 2026-12-01 is a Tuesday. 02:00 UTC is 20:00 on Monday in Chicago (UTC-6): before
        // Monday night's watch there, and inside it in UTC.
        let instant: SystemTime = "2026-12-01T02:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .into();
        let chicago = time_zone(Some("America/Chicago")).unwrap();
        let utc = time_zone(Some("UTC")).unwrap();
        assert!(!s.active_at(instant, &chicago));
        assert!(s.active_at(instant, &utc));
        assert!(
            time_zone(Some("Mars/Olympus"))
                .unwrap_err()
                .contains("unknown time zone")
        );
    }
}
