//! A business calendar: weekly working hours in a time zone, minus holidays, and the
//! arithmetic of business time over it (deadlines, elapsed working time, next working instant).
//!
//! Everything is pure: instants are passed in, nothing reads a clock. Arithmetic works in
//! whole milliseconds of real time (the precision the engine stores).
//!
//! # How working time is laid out
//! Each local date of the calendar's zone has zero or more working intervals in civil time
//! (`09:00-17:00`), none on a holiday. An interval becomes a span of real instants by turning
//! both ends into instants with jiff's *compatible* disambiguation (a civil time in a DST gap
//! moves forward by the gap; in a fold the earlier instant is taken), so a `09:00-17:00` day is
//! 8 h of real time whatever the DST, and an interval across a transition measures the real
//! time between its two ends. Working time is the union of those spans.
//!
//! Deadlines and elapsed time both walk the spans day by day from the start instant; they are
//! exact inverses of each other. The walk gives up after [`Calendar::HORIZON_DAYS`] local days:
//! a deadline further away saturates to [`DateTime::<Utc>::MAX_UTC`] and elapsed time stops
//! counting there.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use jiff::Timestamp;
use jiff::civil::{self, Date};
use jiff::tz::TimeZone;

use crate::holiday::Holiday;

/// Minutes in a civil day: the largest end of a working interval (`24:00`).
pub(crate) const MINUTES_PER_DAY: u16 = 24 * 60;

/// A working interval of a weekday in civil time, `[start, end)` in minutes after local
/// midnight, with `start < end <= 24:00`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Interval {
    pub(crate) start: u16,
    pub(crate) end: u16,
}

/// The working intervals of each weekday, Monday first; each list sorted and non-overlapping.
pub(crate) type Week = [Vec<Interval>; 7];

/// A business calendar. Build one with [`Calendar::from_value`] (a declaration) or
/// [`Calendar::always`] (24/7 in UTC).
#[derive(Clone, Debug)]
pub struct Calendar {
    zone: TimeZone,
    zone_name: String,
    week: Week,
    holidays: Vec<Holiday>,
    /// Every day is `00:00-24:00` and there are no holidays: business time is wall time, and the
    /// arithmetic takes a shortcut that needs no walk (and has no horizon).
    all_hours: bool,
}

impl Calendar {
    /// How many local days a deadline or elapsed-time walk looks at before giving up
    /// (about 20 years). A deadline that lies further away than that saturates.
    pub const HORIZON_DAYS: u32 = 20 * 366;

    /// Assembles a calendar from validated parts (the declaration parser checks them).
    pub(crate) fn new(zone: TimeZone, zone_name: String, week: Week, holidays: Vec<Holiday>) -> Self {
        let all_hours =
            holidays.is_empty() && week.iter().all(|day| day == &[Interval { start: 0, end: MINUTES_PER_DAY }]);
        Self { zone, zone_name, week, holidays, all_hours }
    }

    /// Business time equals wall time: every instant is working time, in UTC. Used when no
    /// calendar is named.
    pub fn always() -> Self {
        let day = vec![Interval { start: 0, end: MINUTES_PER_DAY }];
        Self::new(TimeZone::UTC, "UTC".to_owned(), std::array::from_fn(|_| day.clone()), Vec::new())
    }

    /// The IANA name of the calendar's time zone, as declared (`UTC` for [`Calendar::always`]).
    pub fn timezone(&self) -> &str {
        &self.zone_name
    }

    /// Whether `date` (a local date of the calendar's zone) is a holiday.
    pub fn is_holiday(&self, date: NaiveDate) -> bool {
        jiff_date(date).is_some_and(|date| self.is_holiday_on(date))
    }

    /// Whether `t` falls inside working time.
    pub fn is_working(&self, t: DateTime<Utc>) -> bool {
        if self.all_hours {
            return true;
        }
        let at = millis(t);
        // A span containing `at` belongs to its local date or the day before (a civil time in a
        // DST gap moves forward into the next day); three days cover both.
        self.spans_from(at, 3).next().is_some_and(|span| span.start == at)
    }

    /// The instant at which `duration` of working time has passed since `start`.
    ///
    /// A zero duration gives `start`. Otherwise the result is inside working time or exactly at
    /// the end of a working interval: the millisecond before it is always working time. The
    /// duration is rounded up to whole milliseconds. When the working time is not reached within
    /// [`Calendar::HORIZON_DAYS`] the deadline saturates to [`DateTime::<Utc>::MAX_UTC`].
    pub fn deadline(&self, start: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
        if duration.is_zero() {
            return start;
        }
        let from = millis(start);
        let mut remaining = duration_millis_ceil(duration);
        if self.all_hours {
            return instant(from.saturating_add(remaining));
        }
        for span in self.spans_from(from, Self::HORIZON_DAYS) {
            let len = span.len();
            if remaining <= len {
                return instant(span.start + remaining);
            }
            remaining -= len;
        }
        DateTime::<Utc>::MAX_UTC
    }

    /// Working time between `start` and `now`: zero when `now <= start`. Only the first
    /// [`Calendar::HORIZON_DAYS`] local days after `start` are counted.
    pub fn elapsed(&self, start: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
        let (from, to) = (millis(start), millis(now));
        if to <= from {
            return Duration::ZERO;
        }
        if self.all_hours {
            return duration_from_millis(to.saturating_sub(from));
        }
        let total: i64 = self
            .spans_from(from, Self::HORIZON_DAYS)
            .take_while(|span| span.start < to)
            .map(|span| span.end.min(to) - span.start)
            .sum();
        duration_from_millis(total)
    }

    /// `t` if it is working time, else the start of the next working interval (quiet hours end
    /// there). Saturates to [`DateTime::<Utc>::MAX_UTC`] when there is none within the horizon.
    pub fn next_working(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        if self.is_working(t) {
            return t;
        }
        self.spans_from(millis(t), Self::HORIZON_DAYS)
            .next()
            .map_or(DateTime::<Utc>::MAX_UTC, |span| instant(span.start))
    }

    /// Working spans in instant order, clipped so that none starts before `from` and none
    /// overlaps the previous one, over `days` local days starting the day before `from`'s.
    fn spans_from(&self, from: i64, days: u32) -> Spans<'_> {
        let first_date = self.local_date(from).and_then(|date| date.yesterday().ok());
        Spans {
            calendar: self,
            next_date: first_date,
            days_left: days.saturating_add(1),
            day: Vec::new(),
            pos: 0,
            cursor: from,
        }
    }

    /// The local date of an instant, or `None` outside the civil date range (years ±9999).
    fn local_date(&self, at: i64) -> Option<Date> {
        let timestamp = Timestamp::from_millisecond(at).ok()?;
        Some(self.zone.to_datetime(timestamp).date())
    }

    /// Whether a holiday rule falls on the local `date`.
    fn is_holiday_on(&self, date: Date) -> bool {
        self.holidays.iter().any(|holiday| holiday.matches(date))
    }

    /// Replaces `out` with the working spans of the local `date`, sorted by start.
    fn day_spans(&self, date: Date, out: &mut Vec<Span>) {
        out.clear();
        if self.is_holiday_on(date) {
            return;
        }
        let Some(intervals) =
            usize::try_from(date.weekday().to_monday_zero_offset()).ok().and_then(|i| self.week.get(i))
        else {
            return;
        };
        out.extend(intervals.iter().filter_map(|interval| {
            let start = self.civil_instant(date, interval.start)?;
            let end = self.civil_instant(date, interval.end)?;
            (end > start).then_some(Span { start, end })
        }));
        // Compatible disambiguation is not monotone around a DST gap: a later civil time can map
        // to an earlier instant. Sorting by instant lets the walk merge overlaps into a union.
        out.sort_unstable();
    }

    /// The instant of `minute` minutes after local midnight of `date` (`24:00` is the next day's
    /// midnight), disambiguated the compatible way.
    fn civil_instant(&self, date: Date, minute: u16) -> Option<i64> {
        let (date, minute) = if minute >= MINUTES_PER_DAY { (date.tomorrow().ok()?, 0) } else { (date, minute) };
        let hour = i8::try_from(minute / 60).ok()?;
        let minute = i8::try_from(minute % 60).ok()?;
        let time = civil::Time::new(hour, minute, 0, 0).ok()?;
        let timestamp = self.zone.to_ambiguous_timestamp(date.to_datetime(time)).compatible().ok()?;
        Some(timestamp.as_millisecond())
    }
}

/// A span of working time, `[start, end)` in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    start: i64,
    end: i64,
}

impl Span {
    fn len(self) -> i64 {
        self.end - self.start
    }
}

/// The walk over working spans, one local date at a time. Each yielded span is non-empty,
/// starts no earlier than the walk's start instant and no earlier than the previous span's end,
/// so summing lengths measures working time without counting any instant twice.
struct Spans<'a> {
    calendar: &'a Calendar,
    next_date: Option<Date>,
    days_left: u32,
    day: Vec<Span>,
    pos: usize,
    cursor: i64,
}

impl Iterator for Spans<'_> {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        loop {
            while let Some(&span) = self.day.get(self.pos) {
                self.pos += 1;
                let start = span.start.max(self.cursor);
                if span.end > start {
                    self.cursor = span.end;
                    return Some(Span { start, end: span.end });
                }
            }
            if self.days_left == 0 {
                return None;
            }
            self.days_left -= 1;
            let date = self.next_date?;
            self.next_date = date.tomorrow().ok();
            self.calendar.day_spans(date, &mut self.day);
            self.pos = 0;
        }
    }
}

/// Milliseconds since the Unix epoch (sub-millisecond parts are dropped).
fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The instant `ms` milliseconds after the Unix epoch, saturating at chrono's range.
fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// A duration in whole milliseconds, rounded up so a deadline is never early; saturating.
fn duration_millis_ceil(duration: Duration) -> i64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A non-negative millisecond count as a duration (negative counts are zero).
fn duration_from_millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A chrono date as a jiff date, `None` outside jiff's range.
fn jiff_date(date: NaiveDate) -> Option<Date> {
    let year = i16::try_from(date.year()).ok()?;
    let month = i8::try_from(date.month()).ok()?;
    let day = i8::try_from(date.day()).ok()?;
    Date::new(year, month, day).ok()
}
