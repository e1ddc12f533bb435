//! What an SLA dashboard shows of a clock: its row, with the business time elapsed counted on
//! the clock's calendar up to now.

use std::time::Duration;

use baton_engine::store::{SlaRow, SlaStateName};
use baton_sla::{Calendar, Calendars};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One SLA clock as a dashboard shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaView {
    #[serde(flatten)]
    pub row: SlaRow,
    /// Business time elapsed so far (or until the clock stopped).
    pub elapsed_business_ms: u64,
    pub state: SlaStateName,
}

/// The row with its business time elapsed at `now`, counted on the row's calendar (from
/// `calendars`; wall time when it names none, or one that is no longer known).
pub fn sla_view(row: SlaRow, calendars: &Calendars, now: DateTime<Utc>) -> SlaView {
    let always = Calendar::always();
    let calendar = row.calendar.as_deref().and_then(|name| calendars.get(name)).unwrap_or(&always);
    let running = row.running_since.map_or(Duration::ZERO, |since| calendar.elapsed(since, now));
    let elapsed = Duration::from_millis(row.elapsed_ms).saturating_add(running);
    let state = row.state(now);
    SlaView { elapsed_business_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX), state, row }
}
