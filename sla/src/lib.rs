//! Business calendars, SLA and schedule arithmetic (pure, time passed in).
//!
//! A [`Calendar`] says when work happens: weekly working hours in civil time of a time zone,
//! minus holidays. Over it, business time is counted: [`Calendar::deadline`] is the instant at
//! which a duration of working time has passed, [`Calendar::elapsed`] the working time between
//! two instants (its exact inverse), [`Calendar::next_working`] the end of quiet hours.
//! [`Calendar::always`] is the calendar where business time is wall time.
//!
//! Calendars are declared in YAML (parsed to JSON values by the caller) and read with
//! [`Calendar::from_value`], or as a named set with [`Calendars::from_value`]:
//!
//! ```yaml
//! timezone: Europe/Brussels
//! hours:
//!   mon-fri: ['08:30-12:30', '13:30-17:30']
//!   sat: ['09:00-12:00']
//! holidays:
//!   - 2026-12-25
//!   - { date: 2026-11-11, name: Armistice }
//!   - { yearly: 12-25, name: Christmas }
//!   - { easter: 1, name: Easter Monday }
//!   - { nth: 1, weekday: mon, month: 9, name: Labor Day }
//! ```
//!
//! An SLA is tracked with an [`SlaClock`], a pausable stopwatch of business time that is plain
//! serializable data, and judged with [`state`] against its allowed time and an at-risk
//! [`Threshold`].
//!
//! When a schedule fires (cron in civil time across daylight saving, every, after) and what
//! becomes of missed fire times is [`schedule`].
//!
//! Nothing here reads a clock, sleeps or does I/O beyond looking up a time zone when a
//! calendar is read (the system time zone database, or the one bundled into the binary when
//! the system has none). Instants are handled to the millisecond.

mod calendar;
mod clock;
mod config;
mod holiday;
pub mod schedule;
mod set;

pub use calendar::Calendar;
pub use clock::{SlaClock, SlaState, Threshold, state};
pub use config::CalendarError;
pub use set::Calendars;
