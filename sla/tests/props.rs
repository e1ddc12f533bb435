//! Laws of business-time arithmetic, checked on random instants and durations against a few
//! calendars (split hours with holidays, New York office hours, weekends only across DST, and
//! intervals that straddle a DST gap).

use std::sync::LazyLock;
use std::time::Duration;

use baton_sla::{Calendar, SlaClock};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::json;

/// 2020-01-01T00:00:00Z and 2036-01-01T00:00:00Z, in milliseconds.
const FROM_MS: i64 = 1_577_836_800_000;
const UNTIL_MS: i64 = 2_082_758_400_000;
const HOUR_MS: i64 = 3_600_000;
/// Every working interval of the test calendars begins and ends on a half hour of UTC.
const SLOT_MS: i64 = 30 * 60_000;

static CALENDARS: LazyLock<Vec<Calendar>> = LazyLock::new(|| {
    [
        json!({
            "timezone": "Europe/Brussels",
            "hours": { "mon-fri": ["08:30-12:30", "13:30-17:30"] },
            "holidays": [
                { "yearly": "01-01", "name": "New Year" },
                { "easter": 1, "name": "Easter Monday" },
                { "easter": 39, "name": "Ascension" },
                { "easter": 50, "name": "Whit Monday" },
                { "yearly": "07-21", "name": "National Day" },
                { "yearly": "11-11", "name": "Armistice" },
                { "yearly": "12-25", "name": "Christmas" },
                "2026-12-24",
                { "nth": -1, "weekday": "fri", "month": 8, "name": "Summer closing" },
            ],
        }),
        json!({ "timezone": "America/New_York", "hours": { "mon-fri": ["09:00-17:00"] } }),
        json!({ "timezone": "Europe/Brussels", "hours": { "sat-sun": ["00:00-24:00"] } }),
        json!({ "timezone": "Europe/Brussels", "hours": { "sun": ["01:00-02:30", "03:00-05:00"], "wed": "22:00-24:00", "thu": "00:00-02:00" } }),
    ]
    .iter()
    .map(|declaration| Calendar::from_value(declaration).expect("a valid test calendar"))
    .collect()
});

fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("in range")
}

fn calendar() -> impl Strategy<Value = &'static Calendar> {
    (0..CALENDARS.len()).prop_map(|i| &CALENDARS[i])
}

fn start_ms() -> impl Strategy<Value = i64> {
    FROM_MS..UNTIL_MS
}

/// Durations up to 2000 hours, with short ones as likely as long ones.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![0..=2_000 * HOUR_MS, 0..=8 * HOUR_MS, 0..=1_000i64]
        .prop_map(|ms| Duration::from_millis(u64::try_from(ms).expect("non-negative")))
}

/// Working time in `[from, to)` by asking `is_working` once per half-hour slot: an oracle
/// independent of the day walk (both ends must be on the slot grid).
fn working_time_by_slots(cal: &Calendar, from: i64, to: i64) -> Duration {
    let slots =
        (from..to).step_by(usize::try_from(SLOT_MS).expect("small")).filter(|&t| cal.is_working(instant(t))).count();
    Duration::from_millis(u64::try_from(slots).expect("small") * u64::try_from(SLOT_MS).expect("small"))
}

/// The DST transitions of Brussels and New York from 2020 to 2035, in milliseconds.
static TRANSITIONS: LazyLock<Vec<i64>> = LazyLock::new(|| {
    let from = jiff::Timestamp::from_millisecond(FROM_MS).expect("in range");
    ["Europe/Brussels", "America/New_York"]
        .into_iter()
        .flat_map(|zone| {
            let tz = jiff::tz::TimeZone::get(zone).expect("a known zone");
            tz.following(from)
                .map(|transition| transition.timestamp().as_millisecond())
                .take_while(|&ms| ms < UNTIL_MS)
                .collect::<Vec<_>>()
        })
        .collect()
});

/// Instants within three days of a DST transition.
fn start_near_transition_ms() -> impl Strategy<Value = i64> {
    (0..TRANSITIONS.len(), -72 * HOUR_MS..72 * HOUR_MS).prop_map(|(i, shift)| TRANSITIONS[i] + shift)
}

fn on_grid(ms: i64) -> i64 {
    ms - ms.rem_euclid(SLOT_MS)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn deadlines_land_in_working_time(cal in calendar(), start in start_ms(), d in duration()) {
        let deadline = cal.deadline(instant(start), d);
        if d.is_zero() {
            prop_assert_eq!(deadline, instant(start));
        } else {
            prop_assert!(deadline > instant(start));
            prop_assert!(cal.is_working(deadline - chrono::Duration::milliseconds(1)), "{deadline}");
        }
    }

    #[test]
    fn elapsed_inverts_deadline(cal in calendar(), start in start_ms(), d in duration()) {
        let deadline = cal.deadline(instant(start), d);
        prop_assert_eq!(cal.elapsed(instant(start), deadline), d);
    }

    #[test]
    fn the_laws_hold_around_dst_transitions(
        cal in calendar(),
        start in start_near_transition_ms(),
        d in 0..100 * HOUR_MS,
        slots in 0..(7 * 48i64),
    ) {
        let d = Duration::from_millis(u64::try_from(d).expect("non-negative"));
        let deadline = cal.deadline(instant(start), d);
        prop_assert_eq!(cal.elapsed(instant(start), deadline), d);
        if !d.is_zero() {
            prop_assert!(cal.is_working(deadline - chrono::Duration::milliseconds(1)), "{deadline}");
        }
        let from = on_grid(start);
        let to = from + slots * SLOT_MS;
        prop_assert_eq!(cal.elapsed(instant(from), instant(to)), working_time_by_slots(cal, from, to));
    }

    #[test]
    fn elapsed_is_monotone_and_additive(
        cal in calendar(),
        start in start_ms(),
        a in 0..1_000 * HOUR_MS,
        b in 0..1_000 * HOUR_MS,
    ) {
        let (near, far) = (start + a.min(b), start + a.max(b));
        let to_near = cal.elapsed(instant(start), instant(near));
        let to_far = cal.elapsed(instant(start), instant(far));
        prop_assert!(to_near <= to_far);
        prop_assert_eq!(to_near + cal.elapsed(instant(near), instant(far)), to_far);
    }

    #[test]
    fn next_working_is_working_and_skips_no_working_time(cal in calendar(), start in start_ms()) {
        let next = cal.next_working(instant(start));
        prop_assert!(next >= instant(start));
        prop_assert!(cal.is_working(next));
        prop_assert_eq!(cal.elapsed(instant(start), next), Duration::ZERO);
    }

    #[test]
    fn elapsed_agrees_with_is_working(cal in calendar(), start in start_ms(), slots in 0..(3 * 7 * 48i64)) {
        let from = on_grid(start);
        let to = from + slots * SLOT_MS;
        prop_assert_eq!(cal.elapsed(instant(from), instant(to)), working_time_by_slots(cal, from, to));
    }

    #[test]
    fn sla_clock_counts_working_time_of_running_segments(
        cal in calendar(),
        start in start_ms(),
        events in prop::collection::vec((0..100i64, any::<bool>()), 0..12),
        tail in 0..100i64,
        offset_slots in 0..200u64,
    ) {
        let mut t = on_grid(start);
        let mut clock = SlaClock::start(instant(t));
        let (mut running_since, mut expected) = (Some(t), Duration::ZERO);
        for (gap, pause) in events {
            t += gap * SLOT_MS;
            if pause {
                clock.pause(instant(t), cal);
                if let Some(since) = running_since.take() {
                    expected += working_time_by_slots(cal, since, t);
                }
            } else {
                clock.resume(instant(t));
                running_since.get_or_insert(t);
            }
            // The clock lives in workflow state: it must survive a round trip at any point.
            let stored = serde_json::to_string(&clock).expect("serialize");
            clock = serde_json::from_str(&stored).expect("deserialize");
        }
        let now = t + tail * SLOT_MS;
        if let Some(since) = running_since {
            expected += working_time_by_slots(cal, since, now);
        }
        prop_assert_eq!(clock.is_paused(), running_since.is_none());
        prop_assert_eq!(clock.elapsed(instant(now), cal), expected);

        let offset = Duration::from_secs(offset_slots * 30 * 60);
        match (clock.due(offset, cal), running_since) {
            (None, None) => {}
            (Some(due), Some(since)) => {
                prop_assert!(due >= instant(since));
                let banked = clock.elapsed(instant(since), cal);
                if offset > banked {
                    prop_assert_eq!(clock.elapsed(due, cal), offset);
                } else {
                    prop_assert_eq!(due, instant(since));
                }
            }
            (due, since) => prop_assert!(false, "due {due:?} while running since {since:?}"),
        }
    }
}
