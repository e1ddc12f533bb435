//! Holiday rules: which local dates of a calendar have no working time at all.
//!
//! A rule is matched against a civil date, so a rule never has to be expanded into a list
//! of dates: "is this date a holiday?" is answered for any year the same way.

use jiff::civil::{Date, Weekday};

/// How far from Easter Sunday an `easter:` holiday may be, in days. Keeping the offset
/// within a year means a date can only come from the Easter of its own year or a
/// neighbouring one, so matching checks three years and no more.
pub(crate) const MAX_EASTER_OFFSET: i64 = 366;

/// One rule of a calendar's `holidays:` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HolidayRule {
    /// A single date: `2026-12-25` or `{ date: 2026-12-25 }`.
    Date(Date),
    /// Every year on a month and day: `{ yearly: 12-25 }`. February 29 only matches in leap years.
    Yearly { month: i8, day: i8 },
    /// Days relative to Western (Gregorian) Easter Sunday: `{ easter: 1 }` is Easter Monday.
    Easter(i64),
    /// The nth weekday of a month: `{ nth: 1, weekday: mon, month: 9 }`; a negative nth counts
    /// from the end of the month (-1 = last). A fifth weekday that a month lacks matches nothing.
    Nth { nth: i8, weekday: Weekday, month: i8 },
}

/// A holiday rule with its optional name (names are for people; matching ignores them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holiday {
    pub(crate) rule: HolidayRule,
    pub(crate) name: Option<String>,
}

impl Holiday {
    /// Whether this holiday falls on `date`.
    pub(crate) fn matches(&self, date: Date) -> bool {
        self.rule.matches(date)
    }
}

impl HolidayRule {
    /// Whether the rule falls on `date`.
    pub(crate) fn matches(&self, date: Date) -> bool {
        match *self {
            HolidayRule::Date(d) => d == date,
            HolidayRule::Yearly { month, day } => date.month() == month && date.day() == day,
            HolidayRule::Easter(offset) => easter_offset_matches(offset, date),
            HolidayRule::Nth { nth, weekday, month } => nth_weekday_matches(nth, weekday, month, date),
        }
    }
}

/// Whether `date` is `offset` days from the Easter Sunday of its own year or a neighbouring
/// one (an offset of up to a year can cross into the next or previous year).
fn easter_offset_matches(offset: i64, date: Date) -> bool {
    let year = date.year();
    [year.checked_sub(1), Some(year), year.checked_add(1)]
        .into_iter()
        .flatten()
        .filter_map(easter_sunday)
        .any(|easter| days_between(easter, date) == Some(offset))
}

/// Whether `date` is the `nth` `weekday` of `month` (negative `nth` counts from the month's end).
fn nth_weekday_matches(nth: i8, weekday: Weekday, month: i8, date: Date) -> bool {
    if date.month() != month || date.weekday() != weekday {
        return false;
    }
    let from_start = (date.day() - 1) / 7 + 1;
    let from_end = (date.days_in_month() - date.day()) / 7 + 1;
    if nth > 0 { from_start == nth } else { from_end == -nth }
}

/// Western Easter Sunday of `year` (the Anonymous Gregorian algorithm of Meeus, Jones and
/// Butcher), or `None` for years outside the civil date range.
pub(crate) fn easter_sunday(year: i16) -> Option<Date> {
    let y = i32::from(year);
    let a = y.rem_euclid(19);
    let b = y.div_euclid(100);
    let c = y.rem_euclid(100);
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    Date::new(year, i8::try_from(month).ok()?, i8::try_from(day).ok()?).ok()
}

/// Whole days from `from` to `to` (negative when `to` is earlier).
fn days_between(from: Date, to: Date) -> Option<i64> {
    let span = from.until((jiff::Unit::Day, to)).ok()?;
    Some(i64::from(span.get_days()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i16, m: i8, d: i8) -> Date {
        Date::new(y, m, d).expect("valid date")
    }

    #[test]
    fn easter_sundays_match_published_dates() {
        for (year, month, day) in
            [(2024, 3, 31), (2025, 4, 20), (2026, 4, 5), (2027, 3, 28), (2038, 4, 25), (2285, 3, 22)]
        {
            assert_eq!(easter_sunday(year), Some(date(year, month, day)), "{year}");
        }
    }

    #[test]
    fn easter_monday_ascension_and_whit_monday() {
        let monday = HolidayRule::Easter(1);
        assert!(monday.matches(date(2026, 4, 6)));
        assert!(monday.matches(date(2027, 3, 29)));
        assert!(!monday.matches(date(2026, 4, 5)));
        assert!(HolidayRule::Easter(39).matches(date(2026, 5, 14)), "Ascension 2026");
        assert!(HolidayRule::Easter(50).matches(date(2026, 5, 25)), "Whit Monday 2026");
        assert!(HolidayRule::Easter(-2).matches(date(2026, 4, 3)), "Good Friday 2026");
    }

    #[test]
    fn easter_offsets_can_cross_a_year_boundary() {
        // Easter 2026 is April 5; 300 days later is 2027-01-30.
        assert!(HolidayRule::Easter(300).matches(date(2027, 1, 30)));
        assert!(!HolidayRule::Easter(300).matches(date(2026, 1, 30)));
    }

    #[test]
    fn nth_weekday_rules() {
        let labor_day = HolidayRule::Nth { nth: 1, weekday: Weekday::Monday, month: 9 };
        assert!(labor_day.matches(date(2026, 9, 7)));
        assert!(!labor_day.matches(date(2026, 9, 14)));
        let memorial_day = HolidayRule::Nth { nth: -1, weekday: Weekday::Monday, month: 5 };
        assert!(memorial_day.matches(date(2026, 5, 25)));
        assert!(!memorial_day.matches(date(2026, 5, 18)));
        let thanksgiving = HolidayRule::Nth { nth: 4, weekday: Weekday::Thursday, month: 11 };
        assert!(thanksgiving.matches(date(2026, 11, 26)));
        let fifth_monday_of_feb = HolidayRule::Nth { nth: 5, weekday: Weekday::Monday, month: 2 };
        assert!(!(1..=28).any(|d| fifth_monday_of_feb.matches(date(2026, 2, d))));
    }

    #[test]
    fn yearly_rules_ignore_the_year() {
        let christmas = HolidayRule::Yearly { month: 12, day: 25 };
        assert!(christmas.matches(date(2026, 12, 25)));
        assert!(christmas.matches(date(2031, 12, 25)));
        assert!(!christmas.matches(date(2031, 12, 24)));
        let leap = HolidayRule::Yearly { month: 2, day: 29 };
        assert!(leap.matches(date(2028, 2, 29)));
        assert!(!leap.matches(date(2027, 3, 1)));
    }
}
