//! Five-field cron expressions (`minute hour day-of-month month day-of-week`) in an IANA time
//! zone, and when they next fire.
//!
//! Written here instead of pulling a crate: the grammar is small (lists, ranges, steps, `*`,
//! month and weekday names, `@hourly`-style shorthands) and what matters is the time-zone rule,
//! which is ours:
//! - a wall-clock time skipped by a DST jump (02:30 on the spring-forward night in Berlin) fires
//!   once, shifted forward by the jump (03:30);
//! - a wall-clock time that happens twice (fall back) fires once, at its first occurrence.
//!
//! As in classic cron, when both day-of-month and day-of-week are restricted a day matching
//! either fires.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// The field a parse error is about, as the user writes the expression.
const FIELDS: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// How far ahead [`Cron::next_after`] looks before deciding an expression never fires
/// (`0 0 30 2 *`): leap years repeat within eight years.
const SEARCH_DAYS: i64 = 8 * 366;

/// A parsed cron expression: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    /// Sunday is 0 (7 is accepted and folded onto 0).
    days_of_week: u64,
    /// Day-of-month was `*`: only the weekday decides (and the other way round).
    any_day_of_month: bool,
    any_day_of_week: bool,
}

impl Cron {
    /// Parses five fields or a shorthand (`@hourly`, `@daily`/`@midnight`, `@weekly`,
    /// `@monthly`, `@yearly`/`@annually`). The error names the field and what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "`{text}` has {} fields; a cron expression has five: minute hour day-of-month month day-of-week, e.g. `0 2 * * *`",
                parts.len()
            ));
        }
        let field = |i: usize, lo: u32, hi: u32, names: &[&str]| {
            parse_field(parts[i], lo, hi, names).map_err(|m| format!("{} field `{}`: {m}", FIELDS[i], parts[i]))
        };
        let minutes = field(0, 0, 59, &[])?;
        let hours = field(1, 0, 23, &[])?;
        let days_of_month = field(2, 1, 31, &[])?;
        let months = field(3, 1, 12, &MONTHS)?;
        let mut days_of_week = field(4, 0, 7, &WEEKDAYS)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week & !(1 << 7)) | 1;
        }
        Ok(Cron {
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            any_day_of_month: parts[2] == "*" || parts[2] == "?",
            any_day_of_week: parts[4] == "*" || parts[4] == "?",
        })
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.any_day_of_month, self.any_day_of_week) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first firing strictly after `after`, with wall-clock times read in `zone` (see the
    /// module docs for DST). `None` when the expression never fires (February 30th).
    pub fn next_after(&self, after: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        // Start a day early: a shifted gap time of yesterday's wall clock can still be ahead.
        let start = after.with_timezone(&zone).date_naive().pred_opt()?;
        for offset in 0..SEARCH_DAYS {
            let date = start + Duration::days(offset);
            if !self.day_matches(date) {
                continue;
            }
            for hour in bits(self.hours) {
                for minute in bits(self.minutes) {
                    let wall = date.and_hms_opt(hour, minute, 0)?;
                    let at = resolve(wall, zone);
                    if at > after {
                        return Some(at);
                    }
                }
            }
        }
        None
    }
}

/// The instant a wall-clock time names in `zone`: its first occurrence when it happens twice,
/// and shifted forward by the gap when a DST jump skips it.
fn resolve(wall: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    match zone.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Read with the offset in force before the jump, the time lands after it.
            let before = zone.offset_from_utc_datetime(&(wall - Duration::hours(24))).fix();
            Utc.from_utc_datetime(&(wall - Duration::seconds(i64::from(before.local_minus_utc()))))
        }
    }
}

fn bits(set: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |i| set & (1u64 << i) != 0)
}

fn parse_field(text: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("step `{s}` is not a number"))?;
                if step == 0 {
                    return Err("a step must be at least 1".into());
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (from, to) = if range == "*" || range == "?" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, lo, hi, names)?, value(b, lo, hi, names)?)
        } else {
            let v = value(range, lo, hi, names)?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if step > 1 { hi } else { v })
        };
        if from > to {
            return Err(format!("range {from}-{to} runs backwards"));
        }
        for v in (from..=to).step_by(step as usize) {
            set |= 1 << v;
        }
    }
    Ok(set)
}

fn value(text: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        // Months are named from 1, weekdays from 0.
        return Ok(i as u32 + lo);
    }
    let v: u32 = text.parse().map_err(|_| {
        format!(
            "`{text}` is not a number{}",
            if names.is_empty() { "" } else { " or a name" }
        )
    })?;
    if v < lo || v > hi {
        return Err(format!("{v} is outside {lo}-{hi}"));
    }
    Ok(v)
}

/// Parses an IANA time-zone name (`Europe/Berlin`, `UTC`).
pub fn parse_zone(text: &str) -> Result<Tz, String> {
    text.parse::<Tz>().map_err(|_| {
        format!("`{text}` is not an IANA time zone; write a name such as `UTC`, `Europe/Berlin` or `America/New_York`")
    })
}

/// Microseconds since the epoch as a UTC time (saturating at the representable range).
pub fn utc_of_us(us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use chrono::Timelike;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    /// The local wall-clock time of `at`, with its zone.
    fn wall_clock(at: DateTime<Utc>, zone: Tz) -> String {
        let local = at.with_timezone(&zone);
        format!(
            "{} {:02}:{:02} {}",
            local.date_naive(),
            local.hour(),
            local.minute(),
            local.offset()
        )
    }

    fn berlin() -> Tz {
        parse_zone("Europe/Berlin").unwrap()
    }

    #[test]
    fn daily_at_two_fires_at_two_local_time() {
        let cron = Cron::parse("0 2 * * *").unwrap();
        let next = cron.next_after(at("2026-06-01T12:00:00Z"), berlin()).unwrap();
        assert_eq!(next, at("2026-06-02T00:00:00Z"), "02:00 CEST is 00:00 UTC");
        assert_eq!(cron.next_after(next, berlin()).unwrap(), at("2026-06-03T00:00:00Z"));
    }

    #[test]
    fn lists_ranges_steps_and_names() {
        let cron = Cron::parse("*/15 9-17 * jan-mar mon-fri").unwrap();
        let utc: Tz = "UTC".parse().unwrap();
        // Saturday 2026-01-03 → Monday 2026-01-05 09:00.
        let next = cron.next_after(at("2026-01-03T10:00:00Z"), utc).unwrap();
        assert_eq!(next, at("2026-01-05T09:00:00Z"));
        assert_eq!(cron.next_after(next, utc).unwrap(), at("2026-01-05T09:15:00Z"));
        let sunday = Cron::parse("0 0 * * 7").unwrap();
        assert_eq!(sunday, Cron::parse("0 0 * * sun").unwrap());
        assert_eq!(Cron::parse("@daily").unwrap(), Cron::parse("0 0 * * *").unwrap());
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_given() {
        let cron = Cron::parse("0 0 13 * fri").unwrap();
        let utc: Tz = "UTC".parse().unwrap();
        // 2026-02-06 is a Friday, before the 13th.
        assert_eq!(
            cron.next_after(at("2026-02-01T00:00:00Z"), utc).unwrap(),
            at("2026-02-06T00:00:00Z")
        );
    }

    #[test]
    fn a_time_skipped_by_spring_forward_fires_once_after_the_jump() {
        // Berlin jumps from 02:00 CET to 03:00 CEST on 2026-03-29.
        let cron = Cron::parse("30 2 * * *").unwrap();
        let next = cron.next_after(at("2026-03-28T12:00:00Z"), berlin()).unwrap();
        assert_eq!(next, at("2026-03-29T01:30:00Z"), "03:30 CEST");
        assert_eq!(wall_clock(next, berlin()), "2026-03-29 03:30 CEST");
        assert_eq!(cron.next_after(next, berlin()).unwrap(), at("2026-03-30T00:30:00Z"));
    }

    #[test]
    fn a_time_repeated_by_fall_back_fires_once() {
        // Berlin goes back from 03:00 CEST to 02:00 CET on 2026-10-25: 02:30 happens twice.
        let cron = Cron::parse("30 2 * * *").unwrap();
        let first = cron.next_after(at("2026-10-24T12:00:00Z"), berlin()).unwrap();
        assert_eq!(first, at("2026-10-25T00:30:00Z"), "the first 02:30, in CEST");
        assert_eq!(
            cron.next_after(first, berlin()).unwrap(),
            at("2026-10-26T01:30:00Z"),
            "not again an hour later"
        );
    }

    #[test]
    fn an_impossible_date_never_fires() {
        let utc: Tz = "UTC".parse().unwrap();
        assert_eq!(
            Cron::parse("0 0 30 2 *")
                .unwrap()
                .next_after(at("2026-01-01T00:00:00Z"), utc),
            None
        );
    }

    #[test]
    fn bad_expressions_name_the_field() {
        let err = |t: &str| Cron::parse(t).unwrap_err();
        assert!(err("0 2 * *").contains("has 4 fields"), "{}", err("0 2 * *"));
        assert!(err("61 2 * * *").starts_with("minute field `61`: 61 is outside 0-59"));
        assert!(err("0 25 * * *").starts_with("hour field"));
        assert!(err("0 0 0 * *").starts_with("day of month field"));
        assert!(err("0 0 * foo *").starts_with("month field `foo`"));
        assert!(err("0 0 * * */0").starts_with("day of week field"));
        assert!(err("0 5-2 * * *").contains("runs backwards"));
        assert!(
            parse_zone("Mars/Olympus")
                .unwrap_err()
                .contains("`Mars/Olympus` is not an IANA time zone")
        );
    }
}
