//! A cron expression read in an IANA time zone, and the one rule that decides its fire
//! times across daylight-saving changes.
//!
//! # Daylight-saving rule
//!
//! A pattern whose second, minute and hour fields hold only numbers, lists and ranges
//! (no `*` and no `/`), such as `0 3 * * *`, `30 2 * * 1-5` or `0 2,14 * * *`, names
//! **times of day**. Each such time fires exactly once on each day it matches, at the
//! first instant the zone's clock reads that time or later:
//!
//! - a time that does not exist on a spring-forward day fires at the first instant after
//!   the gap (`30 2 * * *` in Europe/Rome on 2026-03-29 fires at 03:00 CEST = 01:00Z);
//!   several times inside one gap fire once, together;
//! - a time that happens twice on a fall-back day fires once, at its first occurrence
//!   (`30 2 * * *` in Europe/Rome on 2026-10-25 fires at 02:30 CEST = 00:30Z, not again
//!   at 02:30 CET).
//!
//! So a daily schedule fires once on every calendar day of its zone, DST days included.
//!
//! A pattern with `*` or `/` in its second, minute or hour field (`*/15 * * * *`,
//! `0 * * * *`, `* * * * * *`) is a **repeating interval** and follows the zone's clock
//! as it runs: matching times inside a spring-forward gap never happen on the clock and
//! are skipped, and the repeated hour of a fall-back fires on both passes, so the
//! schedule keeps its rhythm in real time (every 15 minutes stays every 15 minutes).
//!
//! This follows Vixie cron, where only jobs without a wildcard in the hour or minute
//! field get the DST treatment, with a step (`/15`) counted as a wildcard. To run at
//! fixed times inside the DST hour, list them: `0,15,30,45 2 * * *`, not `*/15 2 * * *`.
//! croner applies the same two behaviours but counts a list or range (`0 2,14 * * *`)
//! as an interval, which would skip 02:00 on the spring-forward day and fire it twice
//! on the fall-back day; so times of day are computed here on the wall clock directly,
//! and croner's zone-aware search is used for intervals only.

use chrono::{DateTime, LocalResult, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};

/// The six fields after a 5-field expression got its implied `0` seconds: name and the
/// values each accepts, for error messages.
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L, W"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, 0 and 7 both Sunday, L, #"),
];

/// A parsed cron expression bound to its time zone. [`Schedule::next_after`] is a pure
/// function of the expression, the zone and the instant, so fire times can be tested
/// without waiting and recomputed after a restart with the same answer.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
    /// Whether the pattern names times of day (see the module doc) rather than an interval.
    times_of_day: bool,
}

impl Schedule {
    /// Parses 5 fields (minute hour day-of-month month day-of-week, minute precision) or
    /// 6 (a leading second field). Errors name the wrong field and what it accepts.
    pub fn parse(expr: &str, zone: Tz) -> Result<Schedule, String> {
        let mut fields: Vec<&str> = expr.split_whitespace().collect();
        match fields.len() {
            5 => fields.insert(0, "0"),
            6 => {}
            n => {
                return Err(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week) \
                     or 6 (a second field first), got {n}"
                ));
            }
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .build();
        // croner's errors do not say which field failed: try each field on its own,
        // with every other field `*`, so the message can name it.
        for (index, (name, allowed)) in FIELDS.iter().enumerate() {
            let probe: Vec<&str> = (0..FIELDS.len())
                .map(|i| if i == index { fields[i] } else { "*" })
                .collect();
            if let Err(e) = parser.parse(&probe.join(" ")) {
                return Err(format!(
                    "{name} field {:?} is invalid: {} (allowed: {allowed})",
                    fields[index],
                    detail(&e)
                ));
            }
        }
        let cron = parser.parse(&fields.join(" ")).map_err(|e| detail(&e))?;
        let schedule = Schedule {
            cron,
            zone,
            times_of_day: fields[..3].iter().all(|f| !f.contains(['*', '/'])),
        };
        // A satisfiable pattern has a fire time after any instant; 1970 is as good as any.
        if schedule.next_after(DateTime::<Utc>::default()).is_none() {
            return Err("matches no date (such as 30 February), so it would never fire".to_owned());
        }
        Ok(schedule)
    }

    /// The first fire time strictly after `after`, or `None` if there is none (croner
    /// searches up to the year 5000). Whole seconds, by the module's DST rule.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.times_of_day {
            // An interval follows the clock as it runs: croner's zone-aware search skips
            // gap times and walks both passes of a repeated hour, in real-time order.
            return self
                .cron
                .find_next_occurrence(&after.with_timezone(&self.zone), false)
                .ok()
                .map(|t| t.to_utc());
        }
        // Times of day: walk the matching wall-clock times and map each to the first
        // instant the clock reaches it. That mapping never goes backwards, so the first
        // time that maps past `after` is the answer. Only during the second pass of a
        // repeated hour does a time map to the first pass, before `after`, and get
        // skipped: that is what makes it fire once.
        let mut wall = after.with_timezone(&self.zone).naive_local();
        loop {
            wall = self.cron.find_next_occurrence(&wall, false).ok()?;
            let fire = first_instant_reaching(self.zone, wall)?;
            if fire > after {
                return Some(fire);
            }
        }
    }
}

/// The first instant at which the clock of `zone` reads `wall` or later: the instant
/// itself, the first of two in a fall-back, or the end of a spring-forward gap.
fn first_instant_reaching(zone: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.to_utc()),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.to_utc()),
        LocalResult::None => end_of_gap(zone, wall),
    }
}

/// The instant a spring-forward gap holding `wall` ends. UTC offsets lie within ±14 h,
/// so 15 h before `wall` read as UTC the clock shows less than `wall` and 15 h after it
/// more; in between it only moves forward (no zone puts its clock back within a day of
/// a gap), so bisection finds the jump to the second in about 17 offset look-ups.
fn end_of_gap(zone: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    const MARGIN: i64 = 15 * 3600;
    let reached = |secs: i64| {
        DateTime::from_timestamp(secs, 0).map(|t| t.with_timezone(&zone).naive_local() >= wall)
    };
    let centre = wall.and_utc().timestamp();
    let (mut before, mut after) = (centre - MARGIN, centre + MARGIN);
    while after - before > 1 {
        let middle = before + (after - before) / 2;
        if reached(middle)? {
            after = middle;
        } else {
            before = middle;
        }
    }
    DateTime::from_timestamp(after, 0)
}

/// croner's message without its "Component error: " prefix and final full stop.
fn detail(error: &CronError) -> String {
    let text = match error {
        CronError::ComponentError(m)
        | CronError::InvalidPattern(m)
        | CronError::IllegalCharacters(m) => m.clone(),
        other => other.to_string(),
    };
    text.trim_end_matches('.').to_owned()
}

/// RFC 3339 to the second (ticks are whole seconds), with `Z` in UTC and the offset
/// elsewhere.
pub fn rfc3339<Z: TimeZone>(time: DateTime<Z>) -> String
where
    Z::Offset: std::fmt::Display,
{
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{Duration, NaiveDate};

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// Every fire time in `[from, to)`, found by iterating `next_after`.
    fn fires(schedule: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut at = from - Duration::seconds(1);
        while let Some(next) = schedule.next_after(at).filter(|t| *t < to) {
            if next >= from {
                out.push(next);
            }
            at = next;
        }
        out
    }

    /// The fires of `expr` in `zone` during the local calendar day `date`, in UTC.
    fn fires_on(expr: &str, zone: Tz, date: &str) -> Vec<DateTime<Utc>> {
        let schedule = Schedule::parse(expr, zone).unwrap();
        let date: NaiveDate = date.parse().unwrap();
        // A day never starts more than 14 h either side of its UTC midnight.
        let midnight = date.and_hms_opt(0, 0, 0).unwrap().and_utc();
        fires(
            &schedule,
            midnight - Duration::hours(15),
            midnight + Duration::hours(39),
        )
        .into_iter()
        .filter(|t| t.with_timezone(&zone).date_naive() == date)
        .collect()
    }

    const ROME: Tz = chrono_tz::Europe::Rome;

    #[test]
    fn five_and_six_field_expressions_parse() {
        for expr in ["0 3 * * *", "0 */30 * * * *", "30 2 * * 1-5", "0 0 9 L * ?"] {
            assert!(Schedule::parse(expr, ROME).is_ok(), "{expr}");
        }
        let every_half_hour = Schedule::parse("0 */30 * * * *", Tz::UTC).unwrap();
        assert_eq!(
            every_half_hour.next_after(utc("2026-01-01T10:10:00Z")),
            Some(utc("2026-01-01T10:30:00Z"))
        );
    }

    #[test]
    fn out_of_range_fields_are_named_with_what_they_accept() {
        assert_eq!(
            Schedule::parse("61 * * * *", Tz::UTC).unwrap_err(),
            "minute field \"61\" is invalid: Number out of bounds (allowed: 0-59)"
        );
        assert_eq!(
            Schedule::parse("0 25 * * *", Tz::UTC).unwrap_err(),
            "hour field \"25\" is invalid: Number out of bounds (allowed: 0-23)"
        );
        let seconds = Schedule::parse("60 0 3 * * *", Tz::UTC).unwrap_err();
        assert!(seconds.starts_with("second field \"60\""), "{seconds}");
        let month = Schedule::parse("0 3 * JANUARY *", Tz::UTC).unwrap_err();
        assert!(month.starts_with("month field"), "{month}");
    }

    #[test]
    fn a_wrong_number_of_fields_is_rejected() {
        for expr in ["", "* * * *", "0 3 * * * * 2026", "@daily"] {
            let error = Schedule::parse(expr, Tz::UTC).unwrap_err();
            assert!(error.starts_with("expected 5 fields"), "{expr}: {error}");
        }
    }

    #[test]
    fn a_pattern_matching_no_date_is_rejected() {
        let error = Schedule::parse("0 0 30 2 *", Tz::UTC).unwrap_err();
        assert!(error.contains("never fire"), "{error}");
        // 29 February exists every four years: valid.
        assert!(Schedule::parse("0 0 29 2 *", Tz::UTC).is_ok());
    }

    #[test]
    fn a_time_in_the_spring_forward_gap_fires_once_right_after_the_gap() {
        // Europe/Rome, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z).
        assert_eq!(
            fires_on("30 2 * * *", ROME, "2026-03-29"),
            [utc("2026-03-29T01:00:00Z")]
        );
        // Two times in one gap fire once, together; the day's other times are unchanged.
        assert_eq!(
            fires_on("0,30 2,14 * * *", ROME, "2026-03-29"),
            [
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-29T12:00:00Z"),
                utc("2026-03-29T12:30:00Z")
            ]
        );
    }

    #[test]
    fn a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence() {
        // Europe/Rome, 2026-10-25: 03:00 CEST goes back to 02:00 CET (01:00Z).
        assert_eq!(
            fires_on("30 2 * * *", ROME, "2026-10-25"),
            [utc("2026-10-25T00:30:00Z")]
        );
        assert_eq!(
            fires_on("0 2,14 * * *", ROME, "2026-10-25"),
            [utc("2026-10-25T00:00:00Z"), utc("2026-10-25T13:00:00Z")]
        );
        // Asked from the second pass (02:10 CET), the first pass is behind: next day.
        let schedule = Schedule::parse("30 2 * * *", ROME).unwrap();
        assert_eq!(
            schedule.next_after(utc("2026-10-25T01:10:00Z")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
    }

    #[test]
    fn a_daily_schedule_fires_once_on_every_calendar_day_dst_days_included() {
        let zones = [
            ROME,
            chrono_tz::America::New_York,
            // Clocks change at midnight: 00:00 is skipped, 23:00-24:00 repeated.
            chrono_tz::America::Santiago,
            // Half-hour DST.
            chrono_tz::Australia::Lord_Howe,
            Tz::UTC,
        ];
        let first = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        for zone in zones {
            for expr in [
                "0 3 * * *",
                "30 2 * * *",
                "0 2 * * *",
                "0 0 * * *",
                "30 23 * * *",
                "45 1 * * *",
            ] {
                let schedule = Schedule::parse(expr, zone).unwrap();
                let mut per_day = BTreeMap::new();
                for fire in fires(
                    &schedule,
                    utc("2025-12-31T00:00:00Z"),
                    utc("2027-01-02T00:00:00Z"),
                ) {
                    *per_day
                        .entry(fire.with_timezone(&zone).date_naive())
                        .or_insert(0) += 1;
                }
                for date in first.iter_days().take(365) {
                    assert_eq!(per_day.get(&date), Some(&1), "{expr} in {zone} on {date}");
                }
            }
        }
    }

    #[test]
    fn ordinary_days_fire_at_the_local_time() {
        assert_eq!(
            fires_on("0 3 * * *", ROME, "2026-03-28"),
            [utc("2026-03-28T02:00:00Z")]
        );
        assert_eq!(
            fires_on("0 3 * * *", ROME, "2026-03-29"),
            [utc("2026-03-29T01:00:00Z")]
        );
        assert_eq!(
            fires_on("0 3 * * *", ROME, "2026-10-25"),
            [utc("2026-10-25T02:00:00Z")]
        );
        assert_eq!(
            fires_on("0 3 * * *", ROME, "2026-07-01"),
            [utc("2026-07-01T01:00:00Z")]
        );
    }

    #[test]
    fn an_interval_keeps_its_real_time_rhythm_across_dst_changes() {
        for expr in ["*/30 * * * *", "0 */30 * * * *", "0 * * * *"] {
            let schedule = Schedule::parse(expr, ROME).unwrap();
            for day in ["2026-03-29T00:00:00Z", "2026-10-25T00:00:00Z"] {
                let start = utc(day) - Duration::hours(3);
                let times = fires(&schedule, start, start + Duration::hours(6));
                let steps: Vec<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
                assert!(
                    steps.windows(2).all(|s| s[0] == s[1]),
                    "{expr} around {day}: {times:?}"
                );
            }
        }
        // Both passes of the repeated hour fire; the missing hour does not exist.
        assert_eq!(fires_on("0 * * * *", ROME, "2026-10-25").len(), 25);
        assert_eq!(fires_on("0 * * * *", ROME, "2026-03-29").len(), 23);
    }

    #[test]
    fn every_second_gives_consecutive_seconds() {
        let schedule = Schedule::parse("* * * * * *", Tz::UTC).unwrap();
        let start = utc("2026-05-01T11:59:58.250Z");
        let times = fires(&schedule, start, start + Duration::seconds(5));
        assert_eq!(
            times,
            (1..=5)
                .map(|s| utc("2026-05-01T11:59:58Z") + Duration::seconds(s))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn next_after_is_strictly_after_and_utc_works() {
        let schedule = Schedule::parse("0 3 * * *", Tz::UTC).unwrap();
        assert_eq!(
            schedule.next_after(utc("2026-01-01T03:00:00Z")),
            Some(utc("2026-01-02T03:00:00Z"))
        );
        assert_eq!(
            schedule.next_after(utc("2026-01-01T02:59:59.999Z")),
            Some(utc("2026-01-01T03:00:00Z"))
        );
    }
}

/// Properties of the schedule over arbitrary expressions, zones and instants.
#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use chrono::{NaiveDate, NaiveTime, TimeDelta, Timelike};
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// A second, minute or hour field naming fixed values: a number, a list or a range.
    fn fixed(max: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            (0..=max).prop_map(|n| n.to_string()),
            vec(0..=max, 2..4).prop_map(|values| {
                let values: Vec<_> = values.iter().map(u32::to_string).collect();
                values.join(",")
            }),
            (0..=max, 0..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        ]
    }

    /// A second, minute or hour field that repeats: `*`, a step, or a stepped range.
    fn repeating(max: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_owned()),
            (1..=max).prop_map(|step| format!("*/{step}")),
            (0..=max, 1..=max).prop_map(move |(from, step)| format!("{from}-{max}/{step}")),
        ]
    }

    fn time_field(max: u32) -> impl Strategy<Value = String> {
        prop_oneof![fixed(max), repeating(max)]
    }

    /// Six fields, the day fields such that some day always matches.
    fn expression() -> impl Strategy<Value = String> {
        let day_of_month = prop_oneof![
            Just("*".to_owned()),
            (1..=28u32).prop_map(|d| d.to_string()),
            (1..=28u32, 1..=28u32).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            Just("L".to_owned()),
        ];
        let month = prop_oneof![
            Just("*".to_owned()),
            (1..=12u32).prop_map(|m| m.to_string()),
            Just("3-10".to_owned()),
        ];
        let day_of_week = prop_oneof![
            Just("*".to_owned()),
            (0..=6u32).prop_map(|d| d.to_string()),
            Just("1-5".to_owned()),
            Just("SAT,SUN".to_owned()),
        ];
        (
            time_field(59),
            time_field(59),
            time_field(23),
            day_of_month,
            month,
            day_of_week,
        )
            .prop_map(|(s, m, h, dom, mon, dow)| format!("{s} {m} {h} {dom} {mon} {dow}"))
    }

    fn zone() -> impl Strategy<Value = Tz> {
        proptest::sample::select(&chrono_tz::TZ_VARIANTS[..])
    }

    /// From 1970 to 2100, to the nanosecond.
    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        (0..4_102_444_800i64, 0..1_000_000_000u32)
            .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
    }

    proptest! {
        #[test]
        fn each_tick_is_the_first_strictly_after_its_instant_and_ticks_increase(
            expression in expression(),
            zone in zone(),
            from in instant(),
            between in vec(0.0..1.0f64, 6),
        ) {
            let schedule = Schedule::parse(&expression, zone).expect("a valid expression");
            let mut at = from;
            for fraction in between {
                let next = schedule.next_after(at).expect("a tick before the year 5000");
                prop_assert!(next > at, "{} after {}", next, at);
                prop_assert_eq!(next.timestamp_subsec_nanos(), 0, "whole seconds");
                // Nothing fires in between: from any instant up to it, the next is `next`.
                let span = (next - at).num_milliseconds() as f64;
                let inside = at + TimeDelta::milliseconds((span * fraction) as i64);
                prop_assert_eq!(schedule.next_after(inside), Some(next), "from {}", inside);
                at = next;
            }
        }

        #[test]
        fn a_daily_time_fires_exactly_once_on_every_calendar_day_of_its_zone(
            (second, minute, hour) in (0..60u32, 0..60u32, 0..24u32),
            zone in zone(),
            first_day in (0..47_000i64).prop_map(|d| NaiveDate::default() + TimeDelta::days(d)),
        ) {
            let expression = format!("{second} {minute} {hour} * * *");
            let schedule = Schedule::parse(&expression, zone).unwrap();
            // A year of days, from before the first begins (no zone is 15 h off UTC).
            let days = 370;
            let start = first_day.and_hms_opt(0, 0, 0).unwrap().and_utc() - TimeDelta::hours(15);
            let end = start + TimeDelta::days(days + 2);
            let mut per_day = BTreeMap::new();
            let mut at = start;
            while let Some(tick) = schedule.next_after(at).filter(|t| *t < end) {
                *per_day.entry(tick.with_timezone(&zone).date_naive()).or_insert(0) += 1;
                at = tick;
            }
            let time = NaiveTime::from_hms_opt(hour, minute, second).unwrap();
            for day in first_day.iter_days().take(days as usize) {
                let fires = per_day.get(&day).copied().unwrap_or(0);
                // The exception: a time in a spring-forward gap that ends on a later day
                // (America/Nuuk's clock jumps from 23:00 to 00:00 since 2024; Samoa skipped
                // 2011-12-30 whole) fires at the gap's end, on the next day, besides that
                // day's own: the day gets none, the next two.
                let moved = |day: NaiveDate| moved_to_a_later_day(zone, day.and_time(time));
                prop_assert!(
                    fires == 1
                        || (fires == 0 && moved(day))
                        || (fires == 2 && day.pred_opt().is_some_and(moved)),
                    "{} in {}: {} fires on {}", expression, zone, fires, day
                );
            }
        }
    }

    /// Whether `wall` never shows on `zone`'s clock, and the first time after it that
    /// does is on a later day.
    fn moved_to_a_later_day(zone: Tz, wall: NaiveDateTime) -> bool {
        let shows =
            |wall: &NaiveDateTime| !matches!(zone.from_local_datetime(wall), LocalResult::None);
        if shows(&wall) {
            return false;
        }
        // Gaps start and end on whole minutes and last less than two days.
        let first_shown = (1..3 * 24 * 60)
            .map(|minutes| wall.with_second(0).unwrap() + TimeDelta::minutes(minutes))
            .find(shows)
            .expect("a gap ends");
        first_shown.date() > wall.date()
    }
}
