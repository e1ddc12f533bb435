//! Reading a calendar declaration (YAML already parsed to JSON values) into a [`Calendar`].
//!
//! Every error names the field it is about (`hours.mon-fri[1]`) and says what was expected and
//! what was found, because the people who read them are workflow designers, not programmers.

use std::fmt;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use serde_json::{Map, Value};

use crate::calendar::{Calendar, Interval, MINUTES_PER_DAY, Week};
use crate::holiday::{Holiday, HolidayRule, MAX_EASTER_OFFSET};

/// A calendar declaration that cannot be used, with the field it is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct CalendarError {
    calendar: Option<String>,
    path: String,
    message: String,
}

impl CalendarError {
    /// An error about the field at `path` (empty for the whole declaration).
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { calendar: None, path: path.into(), message: message.into() }
    }

    /// The same error, said of the calendar named `name` in a set of calendars.
    pub(crate) fn in_calendar(mut self, name: &str) -> Self {
        self.calendar = Some(name.to_owned());
        self
    }

    /// The calendar's name, when the error came from a set of calendars.
    pub fn calendar(&self) -> Option<&str> {
        self.calendar.as_deref()
    }

    /// The field the error is about, such as `hours.mon-fri[1]` (empty for the whole declaration).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong, without the calendar name and path.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CalendarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.calendar {
            write!(f, "calendar '{name}': ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

type Result<T> = std::result::Result<T, CalendarError>;

const TIMEZONE_EXPECTED: &str = "an IANA time zone name such as Europe/Brussels";
const DAYS_EXPECTED: &str = "days such as mon, mon-fri or mon,wed,fri";
const WEEKDAY_EXPECTED: &str = "one of mon, tue, wed, thu, fri, sat, sun";
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Calendar {
    /// Reads a calendar declaration: `timezone`, `hours` and optional `holidays` (see the crate
    /// documentation for the shape). Errors name the field and what was expected.
    pub fn from_value(value: &Value) -> Result<Calendar> {
        let fields = value.as_object().ok_or_else(|| {
            CalendarError::new(
                "",
                format!("expected a mapping with timezone, hours and holidays, found {}", describe(value)),
            )
        })?;
        reject_unknown_fields(fields, "", &["timezone", "hours", "holidays"])?;
        let (zone, zone_name) = parse_timezone(fields.get("timezone"))?;
        let week = parse_hours(fields.get("hours"))?;
        let holidays = match fields.get("holidays") {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => parse_holidays(value)?,
        };
        Ok(Calendar::new(zone, zone_name, week, holidays))
    }
}

/// `timezone:` — a time zone the bundled or system database knows.
fn parse_timezone(value: Option<&Value>) -> Result<(TimeZone, String)> {
    let value =
        value.ok_or_else(|| CalendarError::new("timezone", format!("missing, expected {TIMEZONE_EXPECTED}")))?;
    let name = value.as_str().ok_or_else(|| {
        CalendarError::new("timezone", format!("expected {TIMEZONE_EXPECTED}, found {}", describe(value)))
    })?;
    let zone = TimeZone::get(name.trim()).map_err(|_| {
        CalendarError::new("timezone", format!("unknown time zone '{name}', expected {TIMEZONE_EXPECTED}"))
    })?;
    Ok((zone, name.trim().to_owned()))
}

/// `hours:` — a mapping of day keys to time ranges; each weekday given at most once.
fn parse_hours(value: Option<&Value>) -> Result<Week> {
    const EXPECTED: &str = "a mapping of days to time ranges such as mon-fri: ['09:00-17:00']";
    let value = value.ok_or_else(|| CalendarError::new("hours", format!("missing, expected {EXPECTED}")))?;
    let entries = value
        .as_object()
        .ok_or_else(|| CalendarError::new("hours", format!("expected {EXPECTED}, found {}", describe(value))))?;
    let mut week: Week = Default::default();
    let mut given_by: [Option<&str>; 7] = [None; 7];
    for (key, ranges) in entries {
        let path = format!("hours.{key}");
        let days = parse_day_key(key, &path)?;
        let intervals = parse_day_ranges(ranges, &path)?;
        for day in days {
            if let Some(earlier) = given_by[day] {
                return Err(CalendarError::new(
                    &path,
                    format!("{} is already given by hours.{earlier}", DAY_NAMES[day]),
                ));
            }
            given_by[day] = Some(key);
            week[day].clone_from(&intervals);
        }
    }
    if week.iter().all(Vec::is_empty) {
        return Err(CalendarError::new("hours", "no working hours at all (deadlines would never come)"));
    }
    Ok(week)
}

/// A day key: `mon`, a range `mon-fri` (wrapping past Sunday, as in `sun-thu`), or a comma list
/// of those. Returns weekday indexes, Monday = 0.
fn parse_day_key(key: &str, path: &str) -> Result<Vec<usize>> {
    let mut days = Vec::new();
    for item in key.split(',').map(str::trim) {
        for day in parse_day_item(item, path)? {
            if days.contains(&day) {
                return Err(CalendarError::new(path, format!("{} is given twice", DAY_NAMES[day])));
            }
            days.push(day);
        }
    }
    Ok(days)
}

/// One item of a day key: a weekday or a range of weekdays.
fn parse_day_item(item: &str, path: &str) -> Result<Vec<usize>> {
    let unknown = |found: &str| CalendarError::new(path, format!("expected {DAYS_EXPECTED}, found '{found}'"));
    match item.split_once('-') {
        None => Ok(vec![weekday_index(item).ok_or_else(|| unknown(item))?]),
        Some((first, last)) => {
            let first = weekday_index(first.trim()).ok_or_else(|| unknown(first.trim()))?;
            let last = weekday_index(last.trim()).ok_or_else(|| unknown(last.trim()))?;
            let count = (last + 7 - first) % 7 + 1;
            Ok((0..count).map(|step| (first + step) % 7).collect())
        }
    }
}

/// A weekday name, three letters or in full, any case; Monday = 0.
fn weekday_index(name: &str) -> Option<usize> {
    const FULL: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    let name = name.to_ascii_lowercase();
    DAY_NAMES.iter().position(|&short| short == name).or_else(|| FULL.iter().position(|&full| full == name))
}

/// The time ranges of a day key: a list of `HH:MM-HH:MM` (or a single one), none overlapping.
/// An empty list declares the days closed.
fn parse_day_ranges(value: &Value, path: &str) -> Result<Vec<Interval>> {
    let items: Vec<(String, &Value)> = match value {
        Value::Array(items) => items.iter().enumerate().map(|(i, item)| (format!("{path}[{i}]"), item)).collect(),
        Value::String(_) => vec![(path.to_owned(), value)],
        Value::Null => Vec::new(),
        other => {
            return Err(CalendarError::new(
                path,
                format!("expected a list of time ranges such as ['09:00-17:00'], found {}", describe(other)),
            ));
        }
    };
    let mut intervals: Vec<(Interval, &str)> = Vec::with_capacity(items.len());
    for (item_path, item) in &items {
        let text = item.as_str().ok_or_else(|| {
            CalendarError::new(item_path.as_str(), format!("expected HH:MM-HH:MM, found {}", describe(item)))
        })?;
        let interval = parse_time_range(text).map_err(|reason| {
            CalendarError::new(item_path.as_str(), format!("expected HH:MM-HH:MM, found '{text}'{reason}"))
        })?;
        if let Some((_, other)) = intervals.iter().find(|(earlier, _)| overlaps(*earlier, interval)) {
            return Err(CalendarError::new(item_path.as_str(), format!("'{text}' overlaps '{other}'")));
        }
        intervals.push((interval, text));
    }
    let mut intervals: Vec<Interval> = intervals.into_iter().map(|(interval, _)| interval).collect();
    intervals.sort_unstable();
    Ok(intervals)
}

/// Whether two intervals share time (touching ends do not).
fn overlaps(a: Interval, b: Interval) -> bool {
    a.start < b.end && b.start < a.end
}

/// `HH:MM-HH:MM`; on failure, the reason to append to the message (empty when the text has
/// the wrong shape altogether).
fn parse_time_range(text: &str) -> std::result::Result<Interval, &'static str> {
    let (start, end) = text.split_once('-').ok_or("")?;
    let start = parse_clock_time(start.trim())?;
    let end = parse_clock_time(end.trim())?;
    if start == MINUTES_PER_DAY {
        return Err(" (24:00 is only allowed as an end)");
    }
    if end < start {
        return Err(" (end before start)");
    }
    if end == start {
        return Err(" (empty range)");
    }
    Ok(Interval { start, end })
}

/// `H:MM` or `HH:MM` as minutes after midnight, up to `24:00`.
fn parse_clock_time(text: &str) -> std::result::Result<u16, &'static str> {
    let (hours, minutes) = text.split_once(':').ok_or("")?;
    let digits = |s: &str, max_len: usize| !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(hours, 2) || !digits(minutes, 2) || minutes.len() != 2 {
        return Err("");
    }
    let hours: u16 = hours.parse().map_err(|_| "")?;
    let minutes: u16 = minutes.parse().map_err(|_| "")?;
    let total = hours * 60 + minutes;
    if minutes > 59 || total > MINUTES_PER_DAY {
        return Err(" (time out of range)");
    }
    Ok(total)
}

/// `holidays:` — a list of dates and rules.
fn parse_holidays(value: &Value) -> Result<Vec<Holiday>> {
    let items = value.as_array().ok_or_else(|| {
        CalendarError::new("holidays", format!("expected a list of holidays, found {}", describe(value)))
    })?;
    items.iter().enumerate().map(|(i, item)| parse_holiday(item, &format!("holidays[{i}]"))).collect()
}

/// One holiday: a date string, or a mapping with exactly one of `date`, `yearly`, `easter`, `nth`
/// (with `weekday` and `month`), and an optional `name`.
fn parse_holiday(value: &Value, path: &str) -> Result<Holiday> {
    const EXPECTED: &str = "a date YYYY-MM-DD or a mapping with one of date, yearly, easter or nth";
    match value {
        Value::String(text) => Ok(Holiday { rule: HolidayRule::Date(parse_date(text, path)?), name: None }),
        Value::Object(fields) => {
            reject_unknown_fields(fields, path, &["date", "yearly", "easter", "nth", "weekday", "month", "name"])?;
            let name = parse_holiday_name(fields.get("name"), path)?;
            Ok(Holiday { rule: parse_holiday_rule(fields, path)?, name })
        }
        other => Err(CalendarError::new(path, format!("expected {EXPECTED}, found {}", describe(other)))),
    }
}

/// The rule part of a holiday mapping: exactly one rule kind.
fn parse_holiday_rule(fields: &Map<String, Value>, path: &str) -> Result<HolidayRule> {
    let kinds: Vec<&str> =
        ["date", "yearly", "easter", "nth"].into_iter().filter(|k| fields.contains_key(*k)).collect();
    let kind = match kinds.as_slice() {
        [] => {
            return Err(CalendarError::new(
                path,
                "expected one of date, yearly, easter or nth (with weekday and month)",
            ));
        }
        [kind] => *kind,
        [first, second, ..] => {
            return Err(CalendarError::new(
                path,
                format!("give only one of date, yearly, easter or nth; found {first} and {second}"),
            ));
        }
    };
    if kind != "nth"
        && let Some(extra) = ["weekday", "month"].into_iter().find(|k| fields.contains_key(*k))
    {
        return Err(CalendarError::new(format!("{path}.{extra}"), "only goes with nth"));
    }
    let field_path = format!("{path}.{kind}");
    let value = fields.get(kind).unwrap_or(&Value::Null);
    match kind {
        "date" => Ok(HolidayRule::Date(parse_date_value(value, &field_path)?)),
        "yearly" => parse_yearly(value, &field_path),
        "easter" => parse_easter(value, &field_path),
        _ => parse_nth(fields, path),
    }
}

/// `name:` — optional text.
fn parse_holiday_name(value: Option<&Value>, path: &str) -> Result<Option<String>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) => Ok(Some(name.clone())),
        Some(other) => {
            Err(CalendarError::new(format!("{path}.name"), format!("expected text, found {}", describe(other))))
        }
    }
}

/// A date given as a value: it must be a `YYYY-MM-DD` string.
fn parse_date_value(value: &Value, path: &str) -> Result<Date> {
    match value.as_str() {
        Some(text) => parse_date(text, path),
        None => Err(CalendarError::new(path, format!("expected a date YYYY-MM-DD, found {}", describe(value)))),
    }
}

/// `YYYY-MM-DD`, a real calendar date.
fn parse_date(text: &str, path: &str) -> Result<Date> {
    let invalid = || CalendarError::new(path, format!("expected a date YYYY-MM-DD, found '{text}'"));
    let mut parts = text.trim().splitn(3, '-');
    let (Some(year), Some(month), Some(day)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return Err(invalid());
    }
    let number = |s: &str| s.parse::<i16>().ok().filter(|_| s.bytes().all(|b| b.is_ascii_digit()));
    let (Some(year), Some(month), Some(day)) = (number(year), number(month), number(day)) else {
        return Err(invalid());
    };
    let month = i8::try_from(month).map_err(|_| invalid())?;
    let day = i8::try_from(day).map_err(|_| invalid())?;
    Date::new(year, month, day).map_err(|_| invalid())
}

/// `yearly: MM-DD` (February 29 allowed: it only falls in leap years).
fn parse_yearly(value: &Value, path: &str) -> Result<HolidayRule> {
    let invalid = || CalendarError::new(path, format!("expected MM-DD such as 12-25, found {}", describe(value)));
    let text = value.as_str().ok_or_else(invalid)?;
    let (month, day) = text.trim().split_once('-').ok_or_else(invalid)?;
    let number =
        |s: &str| Some(s).filter(|s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))?.parse::<i8>().ok();
    let (Some(month), Some(day)) = (number(month), number(day)) else {
        return Err(invalid());
    };
    // 2000 is a leap year, so this accepts exactly the month-days that exist in some year.
    Date::new(2000, month, day).map_err(|_| invalid())?;
    Ok(HolidayRule::Yearly { month, day })
}

/// `easter: N` — whole days from Easter Sunday, within a year either way.
fn parse_easter(value: &Value, path: &str) -> Result<HolidayRule> {
    value.as_i64().filter(|offset| offset.abs() <= MAX_EASTER_OFFSET).map(HolidayRule::Easter).ok_or_else(|| {
        CalendarError::new(
            path,
            format!(
                "expected whole days from Easter Sunday between -{MAX_EASTER_OFFSET} and {MAX_EASTER_OFFSET} \
                 (0 = Easter, 1 = Easter Monday), found {}",
                describe(value)
            ),
        )
    })
}

/// `nth: N, weekday: W, month: M` — the nth weekday of a month, negative from the end.
fn parse_nth(fields: &Map<String, Value>, path: &str) -> Result<HolidayRule> {
    let nth_value = fields.get("nth").unwrap_or(&Value::Null);
    let nth = nth_value.as_i64().filter(|n| (1..=5).contains(&n.abs())).and_then(|n| i8::try_from(n).ok()).ok_or_else(
        || {
            CalendarError::new(
                format!("{path}.nth"),
                format!("expected 1 to 5 or -1 to -5 (-1 = last), found {}", describe(nth_value)),
            )
        },
    )?;
    let weekday_value = fields.get("weekday").ok_or_else(|| {
        CalendarError::new(format!("{path}.weekday"), format!("missing, expected {WEEKDAY_EXPECTED}"))
    })?;
    let weekday = weekday_value
        .as_str()
        .and_then(|name| weekday_index(name.trim()))
        .and_then(|index| Weekday::from_monday_zero_offset(i8::try_from(index).ok()?).ok())
        .ok_or_else(|| {
            CalendarError::new(
                format!("{path}.weekday"),
                format!("expected {WEEKDAY_EXPECTED}, found {}", describe(weekday_value)),
            )
        })?;
    let month_value = fields
        .get("month")
        .ok_or_else(|| CalendarError::new(format!("{path}.month"), "missing, expected a month number 1-12"))?;
    let month =
        month_value.as_i64().filter(|m| (1..=12).contains(m)).and_then(|m| i8::try_from(m).ok()).ok_or_else(|| {
            CalendarError::new(
                format!("{path}.month"),
                format!("expected a month number 1-12, found {}", describe(month_value)),
            )
        })?;
    Ok(HolidayRule::Nth { nth, weekday, month })
}

/// Fails on the first field of `fields` not in `known` (a typo would otherwise be ignored).
fn reject_unknown_fields(fields: &Map<String, Value>, path: &str, known: &[&str]) -> Result<()> {
    match fields.keys().find(|key| !known.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => {
            let field_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            Err(CalendarError::new(field_path, format!("unknown field, expected one of {}", known.join(", "))))
        }
    }
}

/// A value as the designer wrote it, for "found ..." in messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{s}'"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}
