//! When a delivery may go out, by the recipient's preferences: quiet hours hold email and SMS
//! until the next working time of the person's calendar; a digest holds email until the next
//! digest time. In-app and webhook deliveries are never held.

use baton_engine::directory::Person;
use baton_sla::Calendars;
use chrono::{DateTime, Utc};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::channels::{EMAIL, SMS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timing {
    pub not_before: DateTime<Utc>,
    pub digest: bool,
}

pub(crate) fn timing(calendars: &Calendars, person: &Person, channel: &str, now: DateTime<Utc>) -> Timing {
    let prefs = &person.preferences;
    let calendar = prefs.quiet_hours.as_deref().and_then(|name| {
        let found = calendars.get(name);
        if found.is_none() {
            tracing::warn!(person = %person.id, calendar = name, "the quiet-hours calendar is not declared; ignored");
        }
        found
    });
    if channel == EMAIL
        && let Some(digest) = prefs.digest.as_deref()
    {
        match parse_hh_mm(digest) {
            Some((hour, minute)) => {
                let zone = calendar.map_or("UTC", |c| c.timezone());
                return Timing { not_before: next_time_of_day(now, zone, hour, minute), digest: true };
            }
            None => tracing::warn!(person = %person.id, digest, "the digest time is not HH:MM; ignored"),
        }
    }
    let not_before = match calendar {
        Some(calendar) if channel == EMAIL || channel == SMS => calendar.next_working(now),
        _ => now,
    };
    Timing { not_before, digest: false }
}

/// `HH:MM` (24 h clock).
pub(crate) fn parse_hh_mm(text: &str) -> Option<(i8, i8)> {
    let (hour, minute) = text.trim().split_once(':')?;
    let hour: i8 = hour.parse().ok()?;
    let minute: i8 = minute.parse().ok()?;
    ((0..24).contains(&hour) && (0..60).contains(&minute)).then_some((hour, minute))
}

/// The first instant at or after `now` whose local time in `zone` is `hour:minute` (a time in
/// a DST gap moves forward by the gap). UTC when the zone is unknown.
pub(crate) fn next_time_of_day(now: DateTime<Utc>, zone: &str, hour: i8, minute: i8) -> DateTime<Utc> {
    let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
    let Ok(ts) = Timestamp::from_millisecond(now.timestamp_millis()) else { return now };
    let today = ts.to_zoned(tz.clone()).date();
    let at = |date: jiff::civil::Date| date.at(hour, minute, 0, 0).to_zoned(tz.clone()).ok().map(|z| z.timestamp());
    let next = match at(today) {
        Some(t) if t >= ts => Some(t),
        _ => today.tomorrow().ok().and_then(at),
    };
    next.and_then(|t| DateTime::from_timestamp_millis(t.as_millisecond())).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn digest_times_are_local_and_never_in_the_past() {
        let at = |h, m| Utc.with_ymd_and_hms(2026, 6, 1, h, m, 0).single().expect("a time");
        assert_eq!(next_time_of_day(at(6, 0), "UTC", 7, 30), at(7, 30));
        assert_eq!(next_time_of_day(at(7, 30), "UTC", 7, 30), at(7, 30));
        assert_eq!(
            next_time_of_day(at(8, 0), "UTC", 7, 30),
            Utc.with_ymd_and_hms(2026, 6, 2, 7, 30, 0).single().expect("a time")
        );
        // Brussels is UTC+2 in June.
        assert_eq!(next_time_of_day(at(4, 0), "Europe/Brussels", 7, 0), at(5, 0));
    }

    #[test]
    fn hh_mm() {
        assert_eq!(parse_hh_mm("07:30"), Some((7, 30)));
        assert_eq!(parse_hh_mm("7:05"), Some((7, 5)));
        assert_eq!(parse_hh_mm("24:00"), None);
        assert_eq!(parse_hh_mm("noon"), None);
    }
}
