//! Business-time arithmetic on declared calendars: the worked examples, holidays, DST.

use std::time::Duration;

use baton_sla::{Calendar, Calendars};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);
const MS: Duration = Duration::from_millis(1);

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("an RFC 3339 instant").with_timezone(&Utc)
}

fn date(text: &str) -> NaiveDate {
    text.parse().expect("a YYYY-MM-DD date")
}

fn calendar(value: Value) -> Calendar {
    Calendar::from_value(&value).expect("a valid calendar")
}

fn office(zone: &str) -> Calendar {
    calendar(json!({ "timezone": zone, "hours": { "mon-fri": ["09:00-17:00"] } }))
}

fn ms(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).expect("small"))
}

#[test]
fn time_zones_resolve_from_the_system_or_the_bundled_database() {
    jiff::tz::TimeZone::get("Europe/Brussels").expect("Europe/Brussels");
    jiff::tz::TimeZoneDatabase::bundled().get("Europe/Brussels").expect("bundled Europe/Brussels");
    jiff::tz::TimeZoneDatabase::bundled().get("America/New_York").expect("bundled America/New_York");
}

#[test]
fn eight_hours_from_friday_afternoon_end_on_monday_afternoon() {
    let cal = office("Europe/Brussels");
    // Friday 2026-01-09 16:00 in Brussels (UTC+1).
    let deadline = cal.deadline(at("2026-01-09T16:00:00+01:00"), 8 * HOUR);
    assert_eq!(deadline, at("2026-01-12T16:00:00+01:00"));
    assert_eq!(cal.elapsed(at("2026-01-09T16:00:00+01:00"), deadline), 8 * HOUR);
    assert!(!cal.is_working(at("2026-01-10T12:00:00+01:00")), "Saturday");
    assert!(!cal.is_working(at("2026-01-11T12:00:00+01:00")), "Sunday");
    assert_eq!(
        cal.elapsed(at("2026-01-09T16:00:00+01:00"), at("2026-01-12T09:00:00+01:00")),
        HOUR,
        "the weekend counts nothing"
    );
}

#[test]
fn a_holiday_monday_moves_the_deadline_to_tuesday() {
    let cal = calendar(json!({
        "timezone": "Europe/Brussels",
        "hours": { "mon-fri": ["09:00-17:00"] },
        "holidays": [ "2026-01-12" ],
    }));
    assert_eq!(cal.deadline(at("2026-01-09T16:00:00+01:00"), 8 * HOUR), at("2026-01-13T16:00:00+01:00"));
    assert!(!cal.is_working(at("2026-01-12T10:00:00+01:00")));
    assert!(cal.is_holiday(date("2026-01-12")));
    assert!(!cal.is_holiday(date("2026-01-13")));
}

#[test]
fn a_deadline_that_fills_a_day_exactly_ends_at_closing_time() {
    let cal = office("Europe/Brussels");
    let deadline = cal.deadline(at("2026-01-09T09:00:00+01:00"), 8 * HOUR);
    assert_eq!(deadline, at("2026-01-09T17:00:00+01:00"), "not Monday 09:00");
    assert!(cal.is_working(at("2026-01-09T16:59:59.999+01:00")));
    assert!(!cal.is_working(deadline));
}

#[test]
fn a_deadline_from_outside_working_hours_starts_counting_at_opening() {
    let cal = office("Europe/Brussels");
    assert_eq!(cal.deadline(at("2026-01-10T03:00:00+01:00"), HOUR), at("2026-01-12T10:00:00+01:00"));
    assert_eq!(cal.deadline(at("2026-01-12T07:00:00+01:00"), MS), at("2026-01-12T09:00:00.001+01:00"));
}

#[test]
fn a_zero_duration_is_due_at_the_start_even_outside_working_hours() {
    let cal = office("Europe/Brussels");
    let saturday = at("2026-01-10T03:00:00+01:00");
    assert_eq!(cal.deadline(saturday, Duration::ZERO), saturday);
    assert_eq!(cal.elapsed(saturday, saturday), Duration::ZERO);
    assert_eq!(cal.elapsed(saturday, at("2026-01-01T00:00:00Z")), Duration::ZERO, "now before start");
}

#[test]
fn sub_millisecond_durations_round_up() {
    let cal = Calendar::always();
    let start = at("2026-01-09T09:00:00Z");
    assert_eq!(cal.deadline(start, Duration::from_nanos(1)), start + chrono::Duration::milliseconds(1));
}

#[test]
fn split_hours_skip_the_lunch_break() {
    let cal = calendar(json!({
        "timezone": "Europe/Brussels",
        "hours": { "mon-fri": ["08:30-12:30", "13:30-17:30"] },
    }));
    assert_eq!(cal.deadline(at("2026-01-09T12:00:00+01:00"), HOUR), at("2026-01-09T14:00:00+01:00"));
    assert!(!cal.is_working(at("2026-01-09T13:00:00+01:00")));
    assert_eq!(cal.elapsed(at("2026-01-09T00:00:00+01:00"), at("2026-01-10T00:00:00+01:00")), 8 * HOUR);
    assert_eq!(cal.deadline(at("2026-01-09T12:00:00+01:00"), HOUR / 2), at("2026-01-09T12:30:00+01:00"));
}

#[test]
fn next_working_is_the_instant_itself_or_the_next_opening() {
    let cal = calendar(json!({
        "timezone": "Europe/Brussels",
        "hours": { "mon-fri": ["08:30-12:30", "13:30-17:30"], "sat": "09:00-12:00" },
    }));
    let inside = at("2026-01-09T10:00:00+01:00");
    assert_eq!(cal.next_working(inside), inside);
    assert_eq!(cal.next_working(at("2026-01-09T12:45:00+01:00")), at("2026-01-09T13:30:00+01:00"));
    assert_eq!(cal.next_working(at("2026-01-09T17:30:00+01:00")), at("2026-01-10T09:00:00+01:00"));
    assert_eq!(cal.next_working(at("2026-01-10T12:00:00+01:00")), at("2026-01-12T08:30:00+01:00"));
}

#[test]
fn yearly_easter_and_nth_weekday_holidays_resolve() {
    let cal = calendar(json!({
        "timezone": "America/New_York",
        "hours": { "mon-fri": ["09:00-17:00"] },
        "holidays": [
            { "yearly": "12-25", "name": "Christmas" },
            { "easter": 1, "name": "Easter Monday" },
            { "easter": 39, "name": "Ascension" },
            { "nth": 1, "weekday": "mon", "month": 9, "name": "Labor Day" },
            { "nth": -1, "weekday": "mon", "month": 5, "name": "Memorial Day" },
            { "date": "2026-11-11", "name": "Veterans Day" },
        ],
    }));
    for holiday in
        ["2026-12-25", "2027-12-25", "2026-04-06", "2027-03-29", "2026-05-14", "2026-09-07", "2026-05-25", "2026-11-11"]
    {
        assert!(cal.is_holiday(date(holiday)), "{holiday} is a holiday");
    }
    for workday in ["2026-04-07", "2026-09-14", "2026-05-18", "2027-11-11", "2026-12-24"] {
        assert!(!cal.is_holiday(date(workday)), "{workday} is not a holiday");
    }
    // Friday 2026-09-04 16:00 + 8 h skips the weekend and Labor Day.
    assert_eq!(cal.deadline(at("2026-09-04T16:00:00-04:00"), 8 * HOUR), at("2026-09-08T16:00:00-04:00"));
}

/// 40 working hours from Monday 09:00 land on Friday 17:00 local, and 80 from the Monday
/// before land on the Friday after: both around a DST change.
fn assert_working_weeks_ignore_dst(
    zone: &str,
    monday_before: &str,
    monday_after: &str,
    offset_before: &str,
    offset_after: &str,
) {
    let cal = office(zone);
    let start = at(&format!("{monday_before}T09:00:00{offset_before}"));
    let friday_before = cal.deadline(start, 40 * HOUR);
    let friday_after = cal.deadline(start, 80 * HOUR);
    let start_after = at(&format!("{monday_after}T09:00:00{offset_after}"));
    assert_eq!(cal.deadline(start_after, 40 * HOUR), friday_after, "{zone}: the week after");
    assert_eq!(friday_before - start, chrono::Duration::hours(4 * 24 + 8), "{zone}");
    assert_eq!(friday_after - start_after, chrono::Duration::hours(4 * 24 + 8), "{zone}");
    assert_eq!(cal.elapsed(start, friday_after), 80 * HOUR, "{zone}");
    assert_eq!(cal.elapsed(start_after, friday_after), 40 * HOUR, "{zone}");
    // Wednesday to Wednesday crosses the Sunday of the change.
    let wednesday = start + chrono::Duration::days(2);
    assert_eq!(cal.elapsed(wednesday, cal.deadline(wednesday, 40 * HOUR)), 40 * HOUR, "{zone}");
    let tuesday_closing = start_after + chrono::Duration::hours(24 + 8);
    assert_eq!(cal.deadline(wednesday, 40 * HOUR), tuesday_closing, "{zone}");
}

#[test]
fn working_weeks_around_brussels_dst_changes() {
    // Spring forward on Sunday 2026-03-29, fall back on Sunday 2026-10-25.
    assert_working_weeks_ignore_dst("Europe/Brussels", "2026-03-23", "2026-03-30", "+01:00", "+02:00");
    assert_working_weeks_ignore_dst("Europe/Brussels", "2026-10-19", "2026-10-26", "+02:00", "+01:00");
}

#[test]
fn working_weeks_around_new_york_dst_changes() {
    // Spring forward on Sunday 2026-03-08, fall back on Sunday 2026-11-01.
    assert_working_weeks_ignore_dst("America/New_York", "2026-03-02", "2026-03-09", "-05:00", "-04:00");
    assert_working_weeks_ignore_dst("America/New_York", "2026-10-26", "2026-11-02", "-04:00", "-05:00");
}

#[test]
fn a_forty_hour_deadline_from_monday_lands_friday_at_closing() {
    for (zone, monday, friday) in [
        ("Europe/Brussels", "2026-03-30T09:00:00+02:00", "2026-04-03T17:00:00+02:00"),
        ("Europe/Brussels", "2026-10-26T09:00:00+01:00", "2026-10-30T17:00:00+01:00"),
        ("America/New_York", "2026-03-09T09:00:00-04:00", "2026-03-13T17:00:00-04:00"),
        ("America/New_York", "2026-11-02T09:00:00-05:00", "2026-11-06T17:00:00-05:00"),
    ] {
        let cal = office(zone);
        assert_eq!(cal.deadline(at(monday), 40 * HOUR), at(friday), "{zone} {monday}");
        assert_eq!(cal.elapsed(at(monday), at(friday)), 40 * HOUR, "{zone} {monday}");
    }
}

#[test]
fn a_working_sunday_of_a_dst_change_still_has_eight_hours() {
    let cal = calendar(json!({ "timezone": "Europe/Brussels", "hours": { "mon-sun": ["09:00-17:00"] } }));
    for day in ["2026-03-29", "2026-10-25"] {
        let midnight = at(&format!("{day}T00:00:00Z")) - chrono::Duration::hours(3);
        assert_eq!(cal.elapsed(midnight, midnight + chrono::Duration::hours(30)), 8 * HOUR, "{day}");
    }
}

#[test]
fn a_round_the_clock_brussels_calendar_has_a_23_hour_spring_day_and_a_25_hour_autumn_day() {
    let plain = calendar(json!({ "timezone": "Europe/Brussels", "hours": { "mon-sun": ["00:00-24:00"] } }));
    // A holiday long ago makes the arithmetic walk the days instead of taking the wall-time shortcut.
    let walked = calendar(json!({
        "timezone": "Europe/Brussels",
        "hours": { "mon-sun": ["00:00-24:00"] },
        "holidays": ["1999-01-01"],
    }));
    for cal in [&plain, &walked] {
        let spring = cal.elapsed(at("2026-03-29T00:00:00+01:00"), at("2026-03-30T00:00:00+02:00"));
        assert_eq!(spring, 23 * HOUR);
        let autumn = cal.elapsed(at("2026-10-25T00:00:00+02:00"), at("2026-10-26T00:00:00+01:00"));
        assert_eq!(autumn, 25 * HOUR);
        assert_eq!(cal.deadline(at("2026-03-29T00:00:00+01:00"), 23 * HOUR), at("2026-03-30T00:00:00+02:00"));
        assert!(cal.is_working(at("2026-03-29T03:00:00+02:00")), "the instant of the jump");
    }
}

#[test]
fn intervals_across_a_transition_measure_real_time() {
    let cal = calendar(json!({ "timezone": "Europe/Brussels", "hours": { "sun": ["01:00-05:00"] } }));
    let day =
        |text: &str| (at(&format!("{text}T00:00:00Z")) - chrono::Duration::hours(3), at(&format!("{text}T12:00:00Z")));
    let (from, to) = day("2026-03-29");
    assert_eq!(cal.elapsed(from, to), 3 * HOUR, "01:00 CET to 05:00 CEST");
    let (from, to) = day("2026-10-25");
    assert_eq!(cal.elapsed(from, to), 5 * HOUR, "01:00 CEST to 05:00 CET");
    assert_eq!(cal.deadline(from, 5 * HOUR), at("2026-10-25T05:00:00+01:00"));
}

#[test]
fn a_start_inside_a_dst_gap_moves_forward_by_the_gap() {
    // 02:30 does not exist on 2026-03-29 in Brussels; compatible disambiguation reads it as 03:30 CEST.
    let cal = calendar(json!({ "timezone": "Europe/Brussels", "hours": { "sun": ["02:30-05:00"] } }));
    let from = at("2026-03-28T12:00:00Z");
    assert_eq!(cal.next_working(from), at("2026-03-29T03:30:00+02:00"));
    assert_eq!(cal.elapsed(from, at("2026-03-29T12:00:00Z")), 90 * Duration::from_secs(60));
}

#[test]
fn intervals_that_overlap_in_real_time_count_once() {
    // On the spring-forward day, 01:00-02:30 ends at 03:30 CEST (the gap moves 02:30 forward) and
    // 03:00-05:00 starts at 03:00 CEST: together they cover 01:00 CET to 05:00 CEST, 3 h.
    let cal = calendar(json!({ "timezone": "Europe/Brussels", "hours": { "sun": ["01:00-02:30", "03:00-05:00"] } }));
    let from = at("2026-03-28T12:00:00Z");
    let to = at("2026-03-29T12:00:00Z");
    assert_eq!(cal.elapsed(from, to), 3 * HOUR);
    assert!(cal.is_working(at("2026-03-29T03:15:00+02:00")));
    for minutes in [1, 59, 60, 90, 91, 150, 180] {
        let d = Duration::from_secs(minutes * 60);
        let deadline = cal.deadline(from, d);
        assert_eq!(cal.elapsed(from, deadline), d, "{minutes} min");
        assert!(cal.is_working(deadline - chrono::Duration::milliseconds(1)), "{minutes} min");
    }
}

#[test]
fn days_wrap_past_sunday_in_ranges() {
    let cal = calendar(json!({ "timezone": "Asia/Jerusalem", "hours": { "sun-thu": ["09:00-17:00"] } }));
    // 2026-01-09 is a Friday, 2026-01-11 a Sunday.
    assert!(!cal.is_working(at("2026-01-09T10:00:00+02:00")));
    assert!(cal.is_working(at("2026-01-11T10:00:00+02:00")));
    assert!(cal.is_working(at("2026-01-15T10:00:00+02:00")), "Thursday");
}

#[test]
fn always_is_wall_time_in_utc() {
    let cal = Calendar::always();
    assert_eq!(cal.timezone(), "UTC");
    let start = at("2026-03-28T22:00:00Z");
    assert!(cal.is_working(start));
    assert_eq!(cal.deadline(start, 36 * HOUR), at("2026-03-30T10:00:00Z"));
    assert_eq!(cal.elapsed(start, at("2026-03-30T10:00:00Z")), 36 * HOUR);
    assert_eq!(cal.next_working(start), start);
    let decades = Duration::from_secs(100 * 366 * 24 * 3600);
    assert_eq!(cal.elapsed(start, cal.deadline(start, decades)), decades, "no horizon for wall time");
    assert_eq!(cal.deadline(start, Duration::MAX), DateTime::<Utc>::MAX_UTC);
}

#[test]
fn a_year_of_working_time_is_computed_quickly_and_inverts() {
    let cal = calendar(json!({
        "timezone": "Europe/Brussels",
        "hours": { "mon-fri": ["08:30-12:30", "13:30-17:30"] },
        "holidays": [ { "yearly": "12-25" }, { "easter": 1 }, { "nth": 1, "weekday": "mon", "month": 9 } ],
    }));
    let start = at("2026-01-09T10:00:00+01:00");
    let year = 52 * 40 * HOUR;
    let began = std::time::Instant::now();
    let deadline = cal.deadline(start, year);
    let spent = began.elapsed();
    assert!(deadline > at("2027-01-01T00:00:00Z") && deadline < at("2027-02-01T00:00:00Z"), "{deadline}");
    assert_eq!(cal.elapsed(start, deadline), year);
    assert!(spent < Duration::from_secs(1), "a year-long deadline took {spent:?}");
}

#[test]
fn deadlines_beyond_the_horizon_saturate() {
    let cal = office("Europe/Brussels");
    let start = at("2026-01-09T10:00:00+01:00");
    // 40 h a week: 30 years of round-the-clock time is far more than 20 years hold.
    let too_much = Duration::from_secs(30 * 365 * 24 * 3600);
    assert_eq!(cal.deadline(start, too_much), DateTime::<Utc>::MAX_UTC);
    let cap = cal.elapsed(start, DateTime::<Utc>::MAX_UTC);
    assert!(cap > 20 * 52 * 38 * HOUR && cap < 21 * 52 * 40 * HOUR, "{cap:?}");
}

#[test]
fn instants_are_counted_to_the_millisecond() {
    let cal = office("Europe/Brussels");
    let start = at("2026-01-09T16:59:59.999+01:00");
    assert_eq!(cal.deadline(start, MS), at("2026-01-09T17:00:00+01:00"));
    assert_eq!(cal.deadline(start, 2 * MS), at("2026-01-12T09:00:00.001+01:00"));
    assert_eq!(ms(cal.elapsed(start, at("2026-01-12T09:00:00.001+01:00"))), 2 * MS);
}

#[test]
fn calendar_sets_read_each_calendar_and_name_it_in_errors() {
    let set = Calendars::from_value(&json!({
        "brussels": { "timezone": "Europe/Brussels", "hours": { "mon-fri": ["09:00-17:00"] } },
        "new-york": { "timezone": "America/New_York", "hours": { "mon-fri": ["09:00-17:00"] } },
    }))
    .expect("valid calendars");
    assert_eq!(set.names().collect::<Vec<_>>(), ["brussels", "new-york"]);
    assert_eq!(set.get("new-york").map(Calendar::timezone), Some("America/New_York"));
    assert!(set.get("tokyo").is_none());

    let mut merged = Calendars::new();
    merged.insert("brussels", Calendar::always());
    merged.insert("utc", Calendar::always());
    merged.merge(set);
    assert_eq!(merged.len(), 3);
    assert_eq!(merged.get("brussels").map(Calendar::timezone), Some("Europe/Brussels"), "the merged-in set wins");

    let error = Calendars::from_value(&json!({
        "office": { "timezone": "Europe/Brussels", "hours": { "mon-fri": ["09:00-17:00", "13:30-12:00"] } },
    }))
    .expect_err("a bad range");
    assert_eq!(error.calendar(), Some("office"));
    assert_eq!(error.path(), "hours.mon-fri[1]");
    assert_eq!(
        error.to_string(),
        "calendar 'office': hours.mon-fri[1]: expected HH:MM-HH:MM, found '13:30-12:00' (end before start)"
    );
    let error = Calendars::from_value(&json!(["office"])).expect_err("not a mapping");
    assert_eq!(error.to_string(), "expected a mapping of calendar names to calendars, found a list");
}
