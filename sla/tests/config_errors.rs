//! Every way a calendar declaration can be wrong, and the message a designer reads for it.

use baton_sla::Calendar;
use serde_json::{Value, json};

/// The message for a declaration with `timezone: Europe/Brussels` and the given `hours` and
/// `holidays` (either may be `null` to leave it out).
fn error_of(hours: Value, holidays: Value) -> String {
    let mut declaration = json!({ "timezone": "Europe/Brussels" });
    if !hours.is_null() {
        declaration["hours"] = hours;
    }
    if !holidays.is_null() {
        declaration["holidays"] = holidays;
    }
    error_of_declaration(declaration)
}

fn error_of_declaration(declaration: Value) -> String {
    Calendar::from_value(&declaration).expect_err("an invalid calendar").to_string()
}

fn hours_error(hours: Value) -> String {
    error_of(hours, Value::Null)
}

fn holiday_error(holiday: Value) -> String {
    error_of(json!({ "mon-fri": ["09:00-17:00"] }), json!([holiday]))
}

#[test]
fn the_declaration_must_be_a_mapping_of_known_fields() {
    assert_eq!(
        error_of_declaration(json!("Europe/Brussels")),
        "expected a mapping with timezone, hours and holidays, found 'Europe/Brussels'"
    );
    assert_eq!(
        error_of_declaration(json!({ "timezone": "UTC", "hour": {} })),
        "hour: unknown field, expected one of timezone, hours, holidays"
    );
}

#[test]
fn the_time_zone_must_be_known() {
    assert_eq!(
        error_of_declaration(json!({ "hours": { "mon": ["09:00-17:00"] } })),
        "timezone: missing, expected an IANA time zone name such as Europe/Brussels"
    );
    assert_eq!(
        error_of_declaration(json!({ "timezone": 1, "hours": { "mon": ["09:00-17:00"] } })),
        "timezone: expected an IANA time zone name such as Europe/Brussels, found 1"
    );
    assert_eq!(
        error_of_declaration(json!({ "timezone": "Europe/Brusels", "hours": { "mon": ["09:00-17:00"] } })),
        "timezone: unknown time zone 'Europe/Brusels', expected an IANA time zone name such as Europe/Brussels"
    );
}

#[test]
fn hours_must_be_a_mapping_with_some_working_time() {
    assert_eq!(
        hours_error(Value::Null),
        "hours: missing, expected a mapping of days to time ranges such as mon-fri: ['09:00-17:00']"
    );
    assert_eq!(
        hours_error(json!(["09:00-17:00"])),
        "hours: expected a mapping of days to time ranges such as mon-fri: ['09:00-17:00'], found a list"
    );
    assert_eq!(hours_error(json!({})), "hours: no working hours at all (deadlines would never come)");
    assert_eq!(
        hours_error(json!({ "mon-fri": [], "sat": null })),
        "hours: no working hours at all (deadlines would never come)"
    );
}

#[test]
fn day_keys_name_weekdays_once() {
    assert_eq!(
        hours_error(json!({ "mon-fry": ["09:00-17:00"] })),
        "hours.mon-fry: expected days such as mon, mon-fri or mon,wed,fri, found 'fry'"
    );
    assert_eq!(
        hours_error(json!({ "weekdays": ["09:00-17:00"] })),
        "hours.weekdays: expected days such as mon, mon-fri or mon,wed,fri, found 'weekdays'"
    );
    assert_eq!(hours_error(json!({ "mon,wed,mon": ["09:00-17:00"] })), "hours.mon,wed,mon: mon is given twice");
    assert_eq!(
        hours_error(json!({ "mon-fri": ["09:00-17:00"], "wed": ["18:00-19:00"] })),
        "hours.wed: wed is already given by hours.mon-fri"
    );
}

#[test]
fn time_ranges_are_hh_mm_to_hh_mm() {
    let range_error = |range: Value| hours_error(json!({ "mon-fri": ["08:30-12:30", range] }));
    assert_eq!(
        range_error(json!("13:30-12:00")),
        "hours.mon-fri[1]: expected HH:MM-HH:MM, found '13:30-12:00' (end before start)"
    );
    assert_eq!(
        range_error(json!("13:30-13:30")),
        "hours.mon-fri[1]: expected HH:MM-HH:MM, found '13:30-13:30' (empty range)"
    );
    assert_eq!(range_error(json!("1pm-5pm")), "hours.mon-fri[1]: expected HH:MM-HH:MM, found '1pm-5pm'");
    assert_eq!(range_error(json!("13:30")), "hours.mon-fri[1]: expected HH:MM-HH:MM, found '13:30'");
    assert_eq!(range_error(json!("13:3-17:00")), "hours.mon-fri[1]: expected HH:MM-HH:MM, found '13:3-17:00'");
    assert_eq!(
        range_error(json!("13:30-25:00")),
        "hours.mon-fri[1]: expected HH:MM-HH:MM, found '13:30-25:00' (time out of range)"
    );
    assert_eq!(
        range_error(json!("13:60-17:00")),
        "hours.mon-fri[1]: expected HH:MM-HH:MM, found '13:60-17:00' (time out of range)"
    );
    assert_eq!(
        range_error(json!("24:00-24:00")),
        "hours.mon-fri[1]: expected HH:MM-HH:MM, found '24:00-24:00' (24:00 is only allowed as an end)"
    );
    assert_eq!(range_error(json!(13)), "hours.mon-fri[1]: expected HH:MM-HH:MM, found 13");
    assert_eq!(
        hours_error(json!({ "mon-fri": 8 })),
        "hours.mon-fri: expected a list of time ranges such as ['09:00-17:00'], found 8"
    );
}

#[test]
fn time_ranges_of_a_day_do_not_overlap() {
    assert_eq!(
        hours_error(json!({ "mon-fri": ["08:30-12:30", "12:00-14:00"] })),
        "hours.mon-fri[1]: '12:00-14:00' overlaps '08:30-12:30'"
    );
    Calendar::from_value(&json!({
        "timezone": "Europe/Brussels",
        "hours": { "mon-fri": ["12:30-17:00", "08:30-12:30", "22:00-24:00"], "sat": "9:00-12:00" },
    }))
    .expect("touching ranges, any order, 24:00 as an end and single-digit hours are fine");
}

#[test]
fn holidays_are_a_list_of_dates_and_rules() {
    assert_eq!(
        error_of(json!({ "mon": ["09:00-17:00"] }), json!({ "christmas": "12-25" })),
        "holidays: expected a list of holidays, found a mapping"
    );
    assert_eq!(holiday_error(json!("2026-13-01")), "holidays[0]: expected a date YYYY-MM-DD, found '2026-13-01'");
    assert_eq!(holiday_error(json!("2026-02-29")), "holidays[0]: expected a date YYYY-MM-DD, found '2026-02-29'");
    assert_eq!(holiday_error(json!("25/12/2026")), "holidays[0]: expected a date YYYY-MM-DD, found '25/12/2026'");
    assert_eq!(
        holiday_error(json!(20261225)),
        "holidays[0]: expected a date YYYY-MM-DD or a mapping with one of date, yearly, easter or nth, found 20261225"
    );
    assert_eq!(
        holiday_error(json!({ "name": "Christmas" })),
        "holidays[0]: expected one of date, yearly, easter or nth (with weekday and month)"
    );
    assert_eq!(
        holiday_error(json!({ "date": "2026-12-25", "yearly": "12-25" })),
        "holidays[0]: give only one of date, yearly, easter or nth; found date and yearly"
    );
    assert_eq!(
        holiday_error(json!({ "date": "2026-12-25", "when": "always" })),
        "holidays[0].when: unknown field, expected one of date, yearly, easter, nth, weekday, month, name"
    );
    assert_eq!(holiday_error(json!({ "date": "2026-12-25", "name": 7 })), "holidays[0].name: expected text, found 7");
    assert_eq!(holiday_error(json!({ "date": 2026 })), "holidays[0].date: expected a date YYYY-MM-DD, found 2026");
}

#[test]
fn yearly_holidays_are_month_and_day() {
    assert_eq!(
        holiday_error(json!({ "yearly": "13-01" })),
        "holidays[0].yearly: expected MM-DD such as 12-25, found '13-01'"
    );
    assert_eq!(
        holiday_error(json!({ "yearly": "02-30" })),
        "holidays[0].yearly: expected MM-DD such as 12-25, found '02-30'"
    );
    assert_eq!(
        holiday_error(json!({ "yearly": "2026-12-25" })),
        "holidays[0].yearly: expected MM-DD such as 12-25, found '2026-12-25'"
    );
    assert_eq!(
        holiday_error(json!({ "yearly": 1225 })),
        "holidays[0].yearly: expected MM-DD such as 12-25, found 1225"
    );
    Calendar::from_value(&json!({
        "timezone": "UTC", "hours": { "mon": "09:00-17:00" }, "holidays": [{ "yearly": "02-29" }],
    }))
    .expect("February 29 is a yearly holiday of leap years");
}

#[test]
fn easter_holidays_are_whole_days_from_easter_sunday() {
    let expected = "expected whole days from Easter Sunday between -366 and 366 (0 = Easter, 1 = Easter Monday)";
    assert_eq!(holiday_error(json!({ "easter": "monday" })), format!("holidays[0].easter: {expected}, found 'monday'"));
    assert_eq!(holiday_error(json!({ "easter": 1.5 })), format!("holidays[0].easter: {expected}, found 1.5"));
    assert_eq!(holiday_error(json!({ "easter": 400 })), format!("holidays[0].easter: {expected}, found 400"));
}

#[test]
fn nth_weekday_holidays_need_all_three_parts() {
    assert_eq!(
        holiday_error(json!({ "nth": 0, "weekday": "mon", "month": 9 })),
        "holidays[0].nth: expected 1 to 5 or -1 to -5 (-1 = last), found 0"
    );
    assert_eq!(
        holiday_error(json!({ "nth": 6, "weekday": "mon", "month": 9 })),
        "holidays[0].nth: expected 1 to 5 or -1 to -5 (-1 = last), found 6"
    );
    assert_eq!(
        holiday_error(json!({ "nth": 1, "month": 9 })),
        "holidays[0].weekday: missing, expected one of mon, tue, wed, thu, fri, sat, sun"
    );
    assert_eq!(
        holiday_error(json!({ "nth": 1, "weekday": "mo", "month": 9 })),
        "holidays[0].weekday: expected one of mon, tue, wed, thu, fri, sat, sun, found 'mo'"
    );
    assert_eq!(
        holiday_error(json!({ "nth": 1, "weekday": "mon" })),
        "holidays[0].month: missing, expected a month number 1-12"
    );
    assert_eq!(
        holiday_error(json!({ "nth": 1, "weekday": "mon", "month": "sep" })),
        "holidays[0].month: expected a month number 1-12, found 'sep'"
    );
    assert_eq!(
        holiday_error(json!({ "nth": 1, "weekday": "mon", "month": 13 })),
        "holidays[0].month: expected a month number 1-12, found 13"
    );
    assert_eq!(holiday_error(json!({ "easter": 1, "weekday": "mon" })), "holidays[0].weekday: only goes with nth");
    Calendar::from_value(&json!({
        "timezone": "UTC", "hours": { "mon": "09:00-17:00" },
        "holidays": [{ "nth": -1, "weekday": "Monday", "month": 5, "name": "Memorial Day" }],
    }))
    .expect("full weekday names are fine");
}

#[test]
fn errors_expose_their_path_and_message() {
    let error = Calendar::from_value(&json!({ "timezone": "UTC", "hours": { "mon": ["9-17"] } })).expect_err("invalid");
    assert_eq!(error.calendar(), None);
    assert_eq!(error.path(), "hours.mon[0]");
    assert_eq!(error.message(), "expected HH:MM-HH:MM, found '9-17'");
}
