//! When a schedule fires: cron in a time zone's civil time (daylight saving included), a fixed
//! period, or once after a delay, and what a scheduler does with the fire times it missed.
//!
//! Pure: the scheduler passes the instant it last planned and the current time, and keeps the
//! answer in its store. Cron follows civil time: `0 9 * * MON` in Europe/Brussels fires at 09:00
//! local time every Monday, whether that is 08:00 or 07:00 UTC; a local time that does not exist
//! (the spring-forward gap) fires once just after the gap, and a local time that happens twice
//! (the fall-back overlap) fires once, at its first occurrence.

use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// How often, or when, a schedule fires.
#[derive(Clone, Debug)]
pub enum Recurrence {
    /// A cron pattern (five fields, or six with seconds first) in a time zone's civil time.
    Cron { pattern: String, cron: Box<Cron>, zone: TimeZone },
    /// Every period, counted from the schedule's start.
    Every(Duration),
    /// Once, this long after the schedule's start.
    After(Duration),
}

/// What a scheduler does with fire times that passed while it was not running (a stopped
/// server, a long pause): any fire time older than the grace period counts as missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Misfire {
    /// Missed fire times are dropped; the schedule goes on with the next one to come.
    #[default]
    Skip,
    /// However many were missed, the schedule fires once now (for the latest of them).
    RunOnce,
    /// Every missed fire time fires, oldest first (at most [`MAX_CATCH_UP`] at once).
    CatchUp,
}

/// The most fire times one call of [`due`] gives.
pub const MAX_CATCH_UP: usize = 100;

/// How late a fire time may be taken without counting as missed.
pub const GRACE: Duration = Duration::from_secs(60);

/// A schedule that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("`{pattern}` is not a cron expression: {reason}")]
    Cron { pattern: String, reason: String },
    #[error("`{0}` is not a time zone of the time zone database (Europe/Brussels, UTC...)")]
    Zone(String),
    #[error("a schedule's period must be longer than zero")]
    ZeroPeriod,
}

impl Recurrence {
    /// A cron pattern in the civil time of `zone` (an IANA name; `UTC` when none).
    pub fn cron(pattern: &str, zone: Option<&str>) -> Result<Self, ScheduleError> {
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        let cron = parser
            .parse(pattern)
            .map_err(|err| ScheduleError::Cron { pattern: pattern.to_owned(), reason: err.to_string() })?;
        let name = zone.unwrap_or("UTC").trim();
        let zone = TimeZone::get(name).map_err(|_| ScheduleError::Zone(name.to_owned()))?;
        Ok(Self::Cron { pattern: pattern.to_owned(), cron: Box::new(cron), zone })
    }

    pub fn every(period: Duration) -> Result<Self, ScheduleError> {
        if period.is_zero() {
            return Err(ScheduleError::ZeroPeriod);
        }
        Ok(Self::Every(period))
    }

    /// The first fire time of a schedule that starts at `start`.
    pub fn first(&self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron { .. } => self.next_after(start, start),
            Self::Every(period) | Self::After(period) => add(start, *period),
        }
    }

    /// The fire time after `after`, for a schedule that started at `start`; `None` when it
    /// fires no more.
    pub fn next_after(&self, after: DateTime<Utc>, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron { cron, zone, .. } => {
                let from = Timestamp::from_millisecond(after.timestamp_millis()).ok()?.to_zoned(zone.clone());
                let next = cron.find_next_occurrence(&from, false).ok()?;
                Utc.timestamp_millis_opt(next.timestamp().as_millisecond()).single()
            }
            Self::Every(period) => {
                let period_ms = i64::try_from(period.as_millis()).ok()?.max(1);
                let since = (after - start).num_milliseconds().max(0);
                let periods = since / period_ms + 1;
                start.checked_add_signed(chrono::Duration::milliseconds(periods.checked_mul(period_ms)?))
            }
            Self::After(_) => None,
        }
    }
}

fn add(at: DateTime<Utc>, period: Duration) -> Option<DateTime<Utc>> {
    at.checked_add_signed(chrono::Duration::from_std(period).ok()?)
}

/// What a scheduler does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// The fire times to start an instance for, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// How many due fire times were dropped as missed.
    pub skipped: usize,
    /// The next fire time to plan, or `None` when the schedule is done.
    pub next: Option<DateTime<Utc>>,
}

/// The fire times due by `now` for a schedule whose next planned fire time is `planned`, as
/// `misfire` says, and the next one to plan after them.
pub fn due(
    recurrence: &Recurrence,
    start: DateTime<Utc>,
    planned: DateTime<Utc>,
    now: DateTime<Utc>,
    misfire: Misfire,
) -> Due {
    let mut times = Vec::new();
    let mut dropped = 0;
    let mut next = Some(planned);
    while let Some(at) = next {
        if at > now {
            break;
        }
        times.push(at);
        next = recurrence.next_after(at, start);
        // A schedule that fell far behind keeps only the most recent ones in memory; the
        // older ones are missed whatever the policy, past the catch-up bound.
        if times.len() > MAX_CATCH_UP * 2 {
            times.drain(..MAX_CATCH_UP);
            dropped += MAX_CATCH_UP;
        }
    }
    let grace = chrono::Duration::from_std(GRACE).unwrap_or_default();
    let (missed, on_time): (Vec<_>, Vec<_>) = times.iter().partition(|at| now - **at > grace);
    let total = times.len() + dropped;
    let fire = match misfire {
        Misfire::Skip => on_time,
        Misfire::RunOnce => times.last().copied().into_iter().collect(),
        Misfire::CatchUp => {
            let mut all: Vec<_> = missed.into_iter().chain(on_time).collect();
            let over = all.len().saturating_sub(MAX_CATCH_UP);
            all.drain(..over);
            all
        }
    };
    Due { skipped: total - fire.len(), fire, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("valid time")
    }

    /// Every fire time from `start` until `end`, as a scheduler woken every minute would see.
    fn run(recurrence: &Recurrence, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut fired = Vec::new();
        let mut planned = recurrence.first(start);
        let mut now = start;
        while now <= end {
            if let Some(at) = planned {
                let due = due(recurrence, start, at, now, Misfire::Skip);
                fired.extend(due.fire);
                planned = due.next;
            }
            now += chrono::Duration::minutes(1);
        }
        fired
    }

    #[test]
    fn a_weekly_09_00_brussels_schedule_fires_once_a_week_across_both_dst_changes() {
        let weekly = Recurrence::cron("0 9 * * MON", Some("Europe/Brussels")).expect("valid");
        // Spring forward on Sunday 29 March 2026, fall back on Sunday 25 October 2026.
        let spring = run(&weekly, utc(2026, 3, 20, 0, 0), utc(2026, 4, 7, 0, 0));
        assert_eq!(spring, vec![utc(2026, 3, 23, 8, 0), utc(2026, 3, 30, 7, 0), utc(2026, 4, 6, 7, 0)]);
        let autumn = run(&weekly, utc(2026, 10, 16, 0, 0), utc(2026, 11, 3, 0, 0));
        assert_eq!(autumn, vec![utc(2026, 10, 19, 7, 0), utc(2026, 10, 26, 8, 0), utc(2026, 11, 2, 8, 0)]);
    }

    #[test]
    fn a_daily_time_in_the_gap_fires_once_after_it_and_one_in_the_overlap_once() {
        // 02:30 does not exist in Brussels on 29 March 2026, and happens twice on 25 October.
        let daily = Recurrence::cron("30 2 * * *", Some("Europe/Brussels")).expect("valid");
        let spring = run(&daily, utc(2026, 3, 28, 0, 0), utc(2026, 3, 30, 12, 0));
        assert_eq!(spring.len(), 3, "{spring:?}");
        assert_eq!(spring[0], utc(2026, 3, 28, 1, 30));
        assert_eq!(spring[2], utc(2026, 3, 30, 0, 30));
        let autumn = run(&daily, utc(2026, 10, 24, 0, 0), utc(2026, 10, 26, 12, 0));
        assert_eq!(autumn, vec![utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]);
    }

    #[test]
    fn missed_fire_times_are_skipped_run_once_or_caught_up() {
        let hourly = Recurrence::cron("0 * * * *", None).expect("valid");
        let start = utc(2026, 11, 23, 0, 0);
        let planned = hourly.first(start).expect("fires");
        let now = utc(2026, 11, 23, 5, 0) + chrono::Duration::seconds(30);
        let skip = due(&hourly, start, planned, now, Misfire::Skip);
        assert_eq!((skip.fire, skip.skipped), (vec![utc(2026, 11, 23, 5, 0)], 4), "the on-time one runs");
        let once = due(&hourly, start, planned, now, Misfire::RunOnce);
        assert_eq!(once.fire, vec![utc(2026, 11, 23, 5, 0)]);
        let all = due(&hourly, start, planned, now, Misfire::CatchUp);
        assert_eq!(all.fire.len(), 5);
        assert_eq!(all.next, Some(utc(2026, 11, 23, 6, 0)));
        let late = due(&hourly, start, planned, now + chrono::Duration::minutes(10), Misfire::Skip);
        assert!(late.fire.is_empty(), "all five are missed: {late:?}");
        assert_eq!(due(&hourly, start, planned, now, Misfire::RunOnce).next, Some(utc(2026, 11, 23, 6, 0)));

        // Far behind: a thousand minutes missed, a hundred caught up, the rest counted as skipped.
        let minutely = Recurrence::every(Duration::from_secs(60)).expect("valid");
        let behind = due(
            &minutely,
            start,
            start + chrono::Duration::minutes(1),
            start + chrono::Duration::minutes(1000),
            Misfire::CatchUp,
        );
        assert_eq!((behind.fire.len(), behind.skipped), (MAX_CATCH_UP, 1000 - MAX_CATCH_UP));
        assert_eq!(behind.fire.last(), Some(&(start + chrono::Duration::minutes(1000))));
    }

    #[test]
    fn every_counts_from_the_start_and_after_fires_once() {
        let start = utc(2026, 11, 23, 9, 0);
        let every = Recurrence::every(Duration::from_secs(15 * 60)).expect("valid");
        assert_eq!(run(&every, start, utc(2026, 11, 23, 10, 0)).len(), 4);
        let after = Recurrence::After(Duration::from_secs(3600));
        assert_eq!(run(&after, start, utc(2026, 11, 24, 0, 0)), vec![utc(2026, 11, 23, 10, 0)]);
        assert_eq!(Recurrence::every(Duration::ZERO).expect_err("refused"), ScheduleError::ZeroPeriod);
        assert!(matches!(Recurrence::cron("0 9 * *", None), Err(ScheduleError::Cron { .. })));
        assert!(matches!(Recurrence::cron("0 9 * * *", Some("Europe/Brusels")), Err(ScheduleError::Zone(_))));
    }
}
