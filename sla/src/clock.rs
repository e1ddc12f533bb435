//! The SLA clock: a pausable stopwatch of business time, and the state of an SLA from it.
//!
//! The clock is plain data (it lives in workflow state and is serialized with it): the business
//! time banked by finished running segments, and the start of the running segment if there is
//! one. Business time inside a segment is measured by a [`Calendar`] when asked, so the clock
//! never needs ticking.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;

/// When an SLA becomes at risk: a share of its allowed time (`"80%"`) or a fixed amount of
/// business time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Threshold {
    /// Percent of the SLA's allowed time; may exceed 100 (`Percent(200)` of 8 h is 16 h).
    Percent(u32),
    /// A fixed amount of business time.
    After(Duration),
}

impl Threshold {
    /// Reads `"80%"` (whitespace around the number allowed) as 80; `None` for anything else.
    pub fn parse_percent(s: &str) -> Option<u32> {
        let number = s.trim().strip_suffix('%')?.trim();
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        number.parse().ok()
    }

    /// The business time into an SLA of `within` at which the threshold is reached.
    /// Saturates at [`Duration::MAX`].
    pub fn offset(&self, within: Duration) -> Duration {
        match *self {
            Threshold::After(after) => after,
            Threshold::Percent(percent) => percent_of(within, percent),
        }
    }
}

/// `percent`% of `within`, to the nanosecond, saturating.
fn percent_of(within: Duration, percent: u32) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let nanos = within.as_nanos().saturating_mul(u128::from(percent)) / 100;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below one second, so it fits a u32.
        Ok(secs) => Duration::new(secs, u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0)),
        Err(_) => Duration::MAX,
    }
}

/// Where an SLA stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaState {
    /// Business time is below the at-risk threshold.
    OnTrack,
    /// The at-risk threshold is reached but the allowed time is not used up.
    AtRisk,
    /// The allowed time is used up.
    Breached,
}

impl SlaState {
    /// The serialized name: `on_track`, `at_risk` or `breached`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlaState::OnTrack => "on_track",
            SlaState::AtRisk => "at_risk",
            SlaState::Breached => "breached",
        }
    }
}

/// The state of an SLA allowing `within` of business time after `elapsed` of it.
///
/// Breached once `elapsed` reaches `within` (the deadline instant itself counts as breached,
/// as the timer that fires at it does); at risk once it reaches the threshold's offset; on
/// track before. A threshold at or past `within` never shows at risk.
pub fn state(elapsed: Duration, within: Duration, at_risk: Threshold) -> SlaState {
    if elapsed >= within {
        SlaState::Breached
    } else if elapsed >= at_risk.offset(within) {
        SlaState::AtRisk
    } else {
        SlaState::OnTrack
    }
}

/// A pausable stopwatch of business time.
///
/// `elapsed_ms` is the business time of the finished running segments; `running_since_ms` is
/// the start of the current segment (milliseconds since the Unix epoch), `None` while paused.
/// The business time of a running segment is measured by the calendar passed to each call, so
/// the same calendar should be passed every time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaClock {
    elapsed_ms: u64,
    running_since_ms: Option<i64>,
}

impl SlaClock {
    /// A clock running from `at`, with no business time yet.
    pub fn start(at: DateTime<Utc>) -> Self {
        Self { elapsed_ms: 0, running_since_ms: Some(at.timestamp_millis()) }
    }

    /// Stops the clock at `at`, banking the business time of the running segment. No effect
    /// while paused.
    pub fn pause(&mut self, at: DateTime<Utc>, cal: &Calendar) {
        if let Some(since) = self.running_since() {
            self.elapsed_ms = self.elapsed_ms.saturating_add(millis_of(cal.elapsed(since, at)));
            self.running_since_ms = None;
        }
    }

    /// Starts a new running segment at `at`. No effect while running.
    pub fn resume(&mut self, at: DateTime<Utc>) {
        if self.running_since_ms.is_none() {
            self.running_since_ms = Some(at.timestamp_millis());
        }
    }

    pub fn is_paused(&self) -> bool {
        self.running_since_ms.is_none()
    }

    /// The start of the running segment, `None` while paused.
    pub fn running_since(&self) -> Option<DateTime<Utc>> {
        self.running_since_ms.and_then(DateTime::from_timestamp_millis)
    }

    /// Business time so far: the banked segments plus the running one up to `now`.
    pub fn elapsed(&self, now: DateTime<Utc>, cal: &Calendar) -> Duration {
        let running = self.running_since().map_or(Duration::ZERO, |since| cal.elapsed(since, now));
        Duration::from_millis(self.elapsed_ms).saturating_add(running)
    }

    /// When the clock's business time reaches `offset`, given the running segment; `None`
    /// while paused (a paused clock reaches nothing).
    ///
    /// When the banked time already covers `offset` (it was reached in an earlier segment, or
    /// `offset` is zero), the answer is the start of the running segment: the instant to act
    /// on is never earlier than the clock's last start. Otherwise it is the calendar deadline
    /// of the missing business time from the start of the running segment, which is in the
    /// past when the offset was reached earlier in this segment.
    pub fn due(&self, offset: Duration, cal: &Calendar) -> Option<DateTime<Utc>> {
        let since = self.running_since()?;
        let banked = Duration::from_millis(self.elapsed_ms);
        match offset.checked_sub(banked) {
            Some(missing) if !missing.is_zero() => Some(cal.deadline(since, missing)),
            _ => Some(since),
        }
    }
}

/// A duration in whole milliseconds, saturating.
fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 instant")
    }

    #[test]
    fn percent_thresholds_scale_the_allowed_time() {
        assert_eq!(Threshold::parse_percent("80%"), Some(80));
        assert_eq!(Threshold::parse_percent(" 150 % "), Some(150));
        assert_eq!(Threshold::parse_percent("80"), None);
        assert_eq!(Threshold::parse_percent("-5%"), None);
        assert_eq!(Threshold::parse_percent("%"), None);
        assert_eq!(Threshold::parse_percent("1.5%"), None);
        assert_eq!(Threshold::Percent(200).offset(8 * HOUR), 16 * HOUR);
        assert_eq!(Threshold::Percent(80).offset(8 * HOUR), Duration::from_secs(8 * 3600 * 8 / 10));
        assert_eq!(Threshold::Percent(33).offset(Duration::from_millis(1)), Duration::from_nanos(330_000));
        assert_eq!(Threshold::After(HOUR).offset(8 * HOUR), HOUR);
        assert_eq!(Threshold::Percent(u32::MAX).offset(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn states_follow_the_thresholds() {
        let risk = Threshold::Percent(75);
        assert_eq!(state(Duration::ZERO, 8 * HOUR, risk), SlaState::OnTrack);
        assert_eq!(state(6 * HOUR - Duration::from_millis(1), 8 * HOUR, risk), SlaState::OnTrack);
        assert_eq!(state(6 * HOUR, 8 * HOUR, risk), SlaState::AtRisk);
        assert_eq!(state(8 * HOUR, 8 * HOUR, risk), SlaState::Breached);
        assert_eq!(state(7 * HOUR, 8 * HOUR, Threshold::After(9 * HOUR)), SlaState::OnTrack);
        assert_eq!(state(Duration::ZERO, Duration::ZERO, risk), SlaState::Breached);
    }

    #[test]
    fn states_serialize_in_snake_case() {
        let json = serde_json::to_string(&[SlaState::OnTrack, SlaState::AtRisk, SlaState::Breached]).expect("json");
        assert_eq!(json, r#"["on_track","at_risk","breached"]"#);
        let back: SlaState = serde_json::from_str(r#""at_risk""#).expect("parse");
        assert_eq!(back, SlaState::AtRisk);
        assert_eq!(SlaState::OnTrack.as_str(), "on_track");
    }

    #[test]
    fn clock_pauses_and_resumes_in_wall_time() {
        let cal = Calendar::always();
        let mut clock = SlaClock::start(at("2026-01-05T09:00:00Z"));
        assert!(!clock.is_paused());
        assert_eq!(clock.elapsed(at("2026-01-05T10:00:00Z"), &cal), HOUR);
        clock.pause(at("2026-01-05T11:00:00Z"), &cal);
        assert!(clock.is_paused());
        assert_eq!(clock.elapsed(at("2026-01-06T11:00:00Z"), &cal), 2 * HOUR, "paused time does not count");
        assert_eq!(clock.due(3 * HOUR, &cal), None, "a paused clock is due nowhere");
        clock.pause(at("2026-01-05T12:00:00Z"), &cal);
        assert_eq!(clock.elapsed(at("2026-01-06T11:00:00Z"), &cal), 2 * HOUR, "pausing twice is a no-op");
        clock.resume(at("2026-01-06T09:00:00Z"));
        clock.resume(at("2026-01-06T10:00:00Z"));
        assert_eq!(clock.running_since(), Some(at("2026-01-06T09:00:00Z")), "resuming twice is a no-op");
        assert_eq!(clock.elapsed(at("2026-01-06T09:30:00Z"), &cal), 2 * HOUR + HOUR / 2);
        assert_eq!(clock.due(3 * HOUR, &cal), Some(at("2026-01-06T10:00:00Z")));
        assert_eq!(clock.due(HOUR, &cal), Some(at("2026-01-06T09:00:00Z")), "reached before: the segment start");
        assert_eq!(clock.due(2 * HOUR, &cal), Some(at("2026-01-06T09:00:00Z")));
        assert_eq!(clock.due(Duration::ZERO, &cal), Some(at("2026-01-06T09:00:00Z")));
    }

    #[test]
    fn clock_state_round_trips_through_json() {
        let cal = Calendar::always();
        let mut clock = SlaClock::start(at("2026-01-05T09:00:00Z"));
        clock.pause(at("2026-01-05T09:00:01.5Z"), &cal);
        let json = serde_json::to_value(&clock).expect("json");
        assert_eq!(json, serde_json::json!({ "elapsed_ms": 1500, "running_since_ms": null }));
        let back: SlaClock = serde_json::from_value(json).expect("parse");
        assert_eq!(back, clock);
    }
}
